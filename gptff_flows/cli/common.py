"""What the workflow commands share: opening the job store, and printing tables.

The commands join ``gptff`` through the ``gptff.commands`` entry points (``register`` in each
module here); jobflow, atomate2 and maggma are imported inside the command functions so
``gptff --help`` stays fast and works without the flows extra. :class:`RelaxationStore` is what
``gptff relax --store`` records into (found by the core through the ``gptff.stores`` entry point).
"""

from __future__ import annotations

from gptff_core.errors import GPTFFInputError

STORE_HELP = (
    "job store: a directory, a mongodb:// URI, or 'jobflow' (jobflow's settings file); "
    "default $GPTFF_STORE, else the embedded store in $GPTFF_STORE_DIR or "
    "~/.local/share/gptff/store"
)

D3_HELP = "add D3(BJ) dispersion for PBE to every GPTFF evaluation (needs torch-dftd, the d3 extra)"
"""Help of the ``--d3`` option of the workflow commands whose Maker supports ``dispersion``."""


def open_store(location: str | None, *, create: bool = True):
    """The job store at ``location`` (see ``STORE_HELP``), checked before any work: reachable,
    writable and intact; ``create=False`` (read-only commands) refuses a store that does not
    exist instead of creating it."""
    try:
        from gptff_flows.stores import open_job_store
    except ImportError as exc:
        raise GPTFFInputError(
            f"this command needs the flows extra ({exc.name} is missing): pip install -e '.[flows]'"
        ) from None
    return open_job_store(location, create=create)


class RelaxationStore:
    """The job store ``gptff relax --store LOCATION`` records its result in; the store is opened
    and checked when this is made, before the relaxation, so a relaxation is never lost to it."""

    def __init__(self, location: str | None) -> None:
        self.store = open_store(location)

    def record(self, result, calculator, model: str) -> str:
        """Record a :class:`gptff_core.relax.RelaxResult` and return the job's uuid."""
        from gptff_flows.run import record_relaxation

        return record_relaxation(
            self.store,
            result.atoms,
            energy=result.energy,
            converged=result.converged,
            n_steps=result.n_steps,
            calculator=calculator,
            model=model,
        )


HEADERS = {
    "v0_per_atom": "V0 (Å³/atom)",
    "e0_per_atom": "E0 (eV/atom)",
    "b0": "B0 (GPa)",
    "b1": "B'",
    "rms_residual_meV_per_atom": "RMS (meV/atom)",
    "r_squared": "R²",
    "n_atoms": "atoms",
    "energy_per_atom_eV": "E/atom (eV)",
    "volume_per_atom": "V/atom (Å³)",
    "completed_at": "completed",
    "job_name": "job",
    "flow_name": "flow",
    "job_type": "type",
    "e_form_per_atom": "E_form (eV/atom)",
    "e_above_hull": "E_hull (eV/atom)",
    "n_steps": "steps",
    "activation_energy": "Ea (eV)",
    "activation_energy_error": "±Ea (eV)",
    "conductivity_300K": "σ300K (mS/cm)",
    "temperatures": "T (K)",
    "mean_temperatures": "<T> (K)",
    "diffusivities": "D (cm²/s)",
    "temperature": "T (K)",
    "strains": "strain (%)",
    "fcc_percent": "fcc (%)",
    "fcc_onset_strain": "fcc>10% at",
    "n_labels": "labels",
    "n_computed": "computed",
    "n_failed": "failed",
    "sampled_mean_uncertainty": "mean ΔF (eV/Å)",
    "sampled_max_uncertainty": "max ΔF (eV/Å)",
    "force_mae": "F MAE (eV/Å)",
    "energy_mae": "E MAE (meV/atom)",
    "final_force_mae": "F MAE (eV/Å)",
    "final_energy_mae": "E MAE (meV/atom)",
    "final_mean_uncertainty": "mean ΔF (eV/Å)",
    "n_iterations": "iterations",
}


def _cell(value, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "time":
        return str(value)[:19].replace("T", " ")
    return str(value) if spec == "s" else format(value, spec)


def print_table(rows: list[dict], column_spec: str) -> None:
    """Print ``rows`` as aligned columns (``column_spec``: ``key:format``
    items; ``s`` text, ``time`` a timestamp, else a format spec)."""
    columns = [item.split(":", 1) for item in column_spec.split()]
    if not rows:
        print("  (none)")
        return
    cells = [[_cell(row.get(key), spec) for key, spec in columns] for row in rows]
    titles = [HEADERS.get(key, key) for key, _ in columns]
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, t in enumerate(titles)]
    numeric = [spec not in ("s", "time") for _, spec in columns]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(titles))
    for row in cells:
        print(line(row))
