"""The house rules of issue 14, checked on the source: the core never imports the workflows, both
ways of starting the CLI list every command, library functions and files stay small, no library
code switches matplotlib's backend, the analysis modules import no jobflow, and module names of
earlier versions still import (so older stores read)."""

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("gptff_core", "gptff_flows")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400
CORE_COMMANDS = {"predict", "relax", "md", "models", "finetune"}


def library_files(package: str | None = None) -> list[Path]:
    packages = [package] if package else LIBRARY
    return sorted(p for name in packages for p in (ROOT / name).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (top-level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_core_never_imports_the_workflows():
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in library_files("gptff_core")
        for module in imported_modules(path)
        if module.split(".")[0] == "gptff_flows"
    ]
    assert not offenders, offenders


def declared_commands() -> set[str]:
    """The core's commands and those pyproject.toml declares as entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return CORE_COMMANDS | set(project["entry-points"]["gptff.commands"])


def listed_commands(command: list[str]) -> set[str]:
    """The subcommands ``command --help`` lists (the names indented under ``COMMAND``)."""
    env = os.environ | {"COLUMNS": "1000"}
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    positional = result.stdout.split("positional arguments:")[1].split("options:")[0]
    return {
        line.split()[0]
        for line in positional.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    }


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).with_name("gptff"))], [sys.executable, "-m", "gptff_core.cli"]],
    ids=["gptff", "python -m gptff_core.cli"],
)
def test_both_ways_of_starting_the_cli_list_every_command(command):
    """Before the entry points, ``python -m gptff_core.cli`` listed 3 of the 8 subcommands (the
    workflows registered themselves only when imported)."""
    if not Path(command[0]).exists():
        pytest.skip("the gptff script is not installed next to this interpreter")
    assert listed_commands(command) == declared_commands()


def function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_library_functions_and_files_are_small():
    """Every function a reader can hold in mind (≤ 60 lines with its docstring), every file
    under 400 lines."""
    long_functions = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in library_files()
        for name, line, length in function_lengths(path)
        if length > MAX_FUNCTION_LINES
    ]
    long_files = [
        f"{path.relative_to(ROOT)} ({n} lines)"
        for path in library_files()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not long_functions and not long_files, long_functions + long_files


def test_no_library_code_switches_the_matplotlib_backend_or_uses_pyplot():
    """``matplotlib.use("Agg")`` in a library switches the user's backend for the whole
    process; figures are drawn on ``matplotlib.figure.Figure`` instead."""
    offenders = []
    for path in library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if (
                call
                and node.func.attr == "use"
                and getattr(node.func.value, "id", "")
                in (
                    "matplotlib",
                    "mpl",
                )
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} matplotlib.use")
        if "matplotlib.pyplot" in imported_modules(path):
            offenders.append(f"{path.relative_to(ROOT)} imports matplotlib.pyplot")
    assert not offenders, offenders


def test_the_analysis_modules_import_no_workflow_machinery():
    modules = sorted(p.stem for p in (ROOT / "gptff_flows" / "analysis").glob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('gptff_flows.analysis.' + name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jobflow', 'atomate2', 'maggma'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_old_module_names_still_import_and_old_documents_decode():
    """Stores written before the move name ``gptff_flows.screening_schemas`` and friends in
    their documents' ``@module``; jobflow imports that name when it resolves a reference."""
    pytest.importorskip("jobflow")
    from monty.json import MontyDecoder

    from gptff_flows import legacy

    code = "import importlib, sys\n" + "".join(
        f"assert importlib.import_module({old!r}) is importlib.import_module({new!r}), {old!r}\n"
        for old, new in legacy.RENAMED.items()
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-500:]
    old = {"@module": "gptff_flows.eos_verdict", "@class": "EosFit", "eos": "vinet"}
    old |= dict(v0_per_atom=16.5, e0_per_atom=-3.7, b0=76.0, b1=4.5)
    decoded = MontyDecoder().process_decoded(old)
    assert type(decoded).__name__ == "EosFit" and decoded.b0 == 76.0


STORED_NAMES = """
failures.MDFailureDocument finetune_md_jobs.finetune_job finetune_md_jobs.md_job
finetune_md_jobs.summary_job finetune_md_schemas.FineTuneDocument
finetune_md_schemas.MDTemperatureDocument finetune_md_schemas.FineTuneMDDocument
flows.eos.GPTFFEosMaker flows.eos.summarize_eos flows.finetune_md.FineTuneMDMaker
flows.screening.SubstitutionScreeningMaker flows.screening.generate_campaign
flows.tensile.TensileMDMaker jobs.GPTFFStaticMaker jobs.GPTFFRelaxMaker jobs.GPTFFMDMaker
schemas.GPTFFTaskDocument schemas.GPTFFMoleculeTaskDocument schemas.GPTFFEosDocument
screening_jobs.relax_chunk screening_jobs.analyse screening_schemas.CandidateDocument
screening_schemas.ScreeningChunkDocument screening_schemas.ScreeningCampaignDocument
tensile_jobs.tensile_step_job tensile_jobs.tensile_summary_job
tensile_schemas.TensileStepDocument tensile_schemas.TensileSummaryDocument
stores.GPTFFMontyStore
""".split()
"""Every job function, Maker and document class the layout before issue 14 wrote into stores (as
``@module``/``@callable`` or ``@class``), relative to ``gptff_flows`` (listed from that tree)."""


def test_every_name_older_stores_hold_still_resolves():
    pytest.importorskip("jobflow")
    code = "import gptff_flows\nfrom monty.json import MontyDecoder\nmissing = []\n"
    for module, _, name in (name.rpartition(".") for name in STORED_NAMES):
        reference = {"@module": f"gptff_flows.{module}", "@callable": name}
        code += (
            f"try:\n    found = MontyDecoder().process_decoded({reference!r})\n"
            f"except ImportError:\n    found = None\n"
            f"if found is None or isinstance(found, dict):\n    missing.append({name!r})\n"
        )
    result = subprocess.run([sys.executable, "-c", code + "print(missing)"], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "[]"


def test_relax_store_without_the_workflows_is_one_clear_line(monkeypatch):
    import gptff_core.cli.commands as commands
    from gptff_core.errors import GPTFFInputError

    monkeypatch.setattr(commands, "entry_points", lambda **_: [])
    with pytest.raises(GPTFFInputError, match=r"--store needs the flows extra"):
        commands.relaxation_store(None)


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module or an attribute of one (``a.b.c``: ``a.b``, then ``c``)."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_module_and_name_the_docs_mention_exists():
    """README.md and docs/ name modules and functions (``gptff_flows.run.submit_flow``); after
    a move they must still lead somewhere."""
    pytest.importorskip("jobflow")
    import re

    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pattern = re.compile(r"\b(gptff_(?:core|flows)(?:\.[A-Za-z_]\w*)+)")
    named = {m.rstrip(".") for path in texts for m in pattern.findall(path.read_text())}
    missing = sorted(name for name in named if not resolves(name))
    assert not missing, missing
