"""The science behind the workflows, as plain functions: no jobflow, no store, no network.

* :mod:`.eos_fit`, :mod:`.eos_geometry` — equation-of-state fits with their verdict, cutoff
  crossings, the 3D-bulk check;
* :mod:`.energetics` — formation energies and the convex hull; :mod:`.substitution` — candidate
  generation from prototypes;
* :mod:`.diffusion` — MSD, diffusivity, Arrhenius fit, temperature checks;
* :mod:`.stacking`, :mod:`.xrd` — a-CNA stacking fractions and the XRD peak of the tensile flow.
"""
