"""The ``gptff`` program: its parser, how subcommands join it, and how errors become exit codes.

Every subcommand prints a short human summary, or one JSON document with ``--json``. Exit codes
are :class:`gptff_core.errors.ExitCode`: 0 success, 1 bad input (one ``gptff: error: ...`` line on
stderr, before any work), 2 usage error (argparse), 3 finished but a result is flagged (not
converged, a fit or temperature not to be trusted), 4 the work failed, 5 out of memory or disk,
130 interrupted. ``--debug`` (or ``GPTFF_DEBUG=1``) prints the traceback of an error too.

Subcommands join through ``register(subparsers)`` functions: the core's own
(:data:`CORE_COMMANDS`), then every entry point of the group :data:`ENTRY_POINT_GROUP` (the
workflows package declares its commands there, so the core never imports it). A command is
``def cmd_name(args) -> int`` decorated with :func:`command`; its module's ``register`` calls
:func:`add_commands`. Keep a command module's top-level imports light (``gptff --help`` imports
them all) and import heavy dependencies inside the command functions.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points

from gptff_core.errors import ComputationError, ExitCode, GPTFFInputError
from gptff_core.pretrained import DEFAULT_MODEL

ENTRY_POINT_GROUP = "gptff.commands"
"""Entry-point group of ``register(subparsers)`` functions that add subcommands to ``gptff``."""

CORE_COMMANDS = (
    "gptff_core.cli.commands:register",
    "gptff_core.cli.md:register",
    "gptff_core.training.cli:register",
)
"""The core's own ``register`` functions (``module:function``), added before the entry points."""


def arg(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict]:
    """One ``add_argument`` call, declared next to its subcommand."""
    return flags, kwargs


@dataclass(frozen=True)
class CommandSpec:
    """How a subcommand appears in ``gptff``: its name, help, arguments and options."""

    name: str
    help: str
    arguments: tuple
    epilog: str | None
    model_options: bool


def command(name: str, help: str, *arguments, epilog: str | None = None, model_options=True):
    """Declare ``func(args) -> exit code`` as subcommand ``name`` with its ``arg(...)``s (the
    declaration is attached to the function; :func:`add_commands` adds it to a parser)."""

    def declare(func: Callable[[argparse.Namespace], int]) -> Callable:
        func.command_spec = CommandSpec(name, help, arguments, epilog, model_options)
        return func

    return declare


def _model_options() -> argparse.ArgumentParser:
    """The ``--model --device --dtype --smooth`` options every model-using subcommand takes."""
    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path ({DEFAULT_MODEL})"
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (%(default)s)")
    group.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    group.add_argument("--smooth", action="store_true", default=None, help="C² cutoff envelopes")
    return model


def add_commands(subparsers, *functions: Callable[[argparse.Namespace], int]) -> None:
    """Add each :func:`command`-decorated function to ``subparsers`` (with ``--json`` and
    ``--debug``, and the model options unless the command declines them)."""
    for run in functions:
        spec: CommandSpec = run.command_spec
        sub = subparsers.add_parser(
            spec.name,
            help=spec.help,
            description=spec.help,
            epilog=spec.epilog,
            parents=[_model_options()] if spec.model_options else [],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for flags, kwargs in spec.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.add_argument("--json", action="store_true", help="print one JSON document")
        sub.add_argument(
            "--debug", action="store_true", help="on an error, print the traceback too"
        )
        sub.set_defaults(run=run)


def _registrars() -> list[Callable]:
    """The core's ``register`` functions, then those the installed entry points declare."""
    found = []
    for target in CORE_COMMANDS:
        module, _, name = target.partition(":")
        found.append(getattr(import_module(module), name))
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        found.append(point.load())
    return found


def build_parser() -> argparse.ArgumentParser:
    """The ``gptff`` parser with every subcommand: the core's and the entry points'."""
    parser = argparse.ArgumentParser(prog="gptff", description="GPTFF machine-learned force field")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gptff`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    debug = args.debug or os.environ.get("GPTFF_DEBUG", "") not in ("", "0")
    return report_input_errors("gptff", lambda: args.run(args), debug=debug)


def report_input_errors(program: str, run: Callable[[], int], debug: bool = False) -> int:
    """``run()``'s exit code; an exception becomes one line ``<program>: error: ...`` on stderr
    and its :class:`ExitCode` (see :func:`classify_error`); Ctrl-C gives 130. ``debug`` prints
    the traceback as well."""
    try:
        return int(run())
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        code, message = classify_error(exc)
        print(f"{program}: error: {message}", file=sys.stderr)
        return code


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def classify_error(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code of ``exc`` and a one-line message that says what failed and what to do."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, GPTFFInputError):
        return ExitCode.BAD_INPUT, text
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return ExitCode.NO_RESOURCES, (
            f"out of disk space ({text}); free some space and rerun (results already stored "
            "are kept)"
        )
    if isinstance(exc, OSError):  # a missing or unreadable file, a bad path
        return ExitCode.BAD_INPUT, text
    if _is_out_of_memory(exc):
        return ExitCode.NO_RESOURCES, (
            "out of memory; evaluate fewer or smaller structures at once (smaller batches or "
            "supercells), or use a machine with more memory"
        )
    if isinstance(exc, ComputationError):
        return ExitCode.FAILED, text
    return ExitCode.FAILED, (
        f"internal error ({type(exc).__name__}: {text}); rerun with --debug for the traceback "
        "and report it"
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc)
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )
