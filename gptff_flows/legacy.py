"""Module names of earlier versions, so stores written by them still read.

Documents and jobs in a store name the code that made them (``"@module":
"gptff_flows.screening_schemas"``); jobflow imports that name when it resolves a reference (a
screening campaign resumed after an upgrade, a queued jobflow-remote job). The modules were
renamed when the package was arranged by role (jobs/, flows/, schemas/, queries/, analysis/,
cli/); :class:`RenamedModules` answers an old name with the module it became.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

RENAMED = {
    "gptff_flows.cli_finetune_md": "gptff_flows.cli.finetune_md",
    "gptff_flows.cli_screening": "gptff_flows.cli.screen",
    "gptff_flows.diffusion": "gptff_flows.analysis.diffusion",
    "gptff_flows.energetics": "gptff_flows.analysis.energetics",
    "gptff_flows.eos_geometry": "gptff_flows.analysis.eos_geometry",
    "gptff_flows.eos_verdict": "gptff_flows.analysis.eos_fit",
    "gptff_flows.finetune_md_jobs": "gptff_flows.jobs.finetune_md",
    "gptff_flows.finetune_md_queries": "gptff_flows.queries.finetune_md",
    "gptff_flows.finetune_md_schemas": "gptff_flows.schemas.finetune_md",
    "gptff_flows.screening_jobs": "gptff_flows.jobs.screening",
    "gptff_flows.screening_leases": "gptff_flows.jobs.leases",
    "gptff_flows.screening_schemas": "gptff_flows.schemas.screening",
    "gptff_flows.stacking": "gptff_flows.analysis.stacking",
    "gptff_flows.store_integrity": "gptff_flows.stores.integrity",
    "gptff_flows.substitution": "gptff_flows.analysis.substitution",
    "gptff_flows.tensile_jobs": "gptff_flows.jobs.tensile",
    "gptff_flows.tensile_queries": "gptff_flows.queries.tensile",
    "gptff_flows.tensile_schemas": "gptff_flows.schemas.tensile",
    "gptff_flows.xrd": "gptff_flows.analysis.xrd",
}
"""Old module name → the module that holds its code now."""


class RenamedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name (:data:`RENAMED`) as the module it became."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in RENAMED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(RENAMED[spec.name])

    def exec_module(self, module) -> None:
        """The module is the new one, already executed."""


def install() -> None:
    """Answer the old module names from now on (once per process)."""
    if not any(isinstance(finder, RenamedModules) for finder in sys.meta_path):
        sys.meta_path.append(RenamedModules())
