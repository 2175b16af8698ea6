"""GPTFF flows: one module per workflow."""
