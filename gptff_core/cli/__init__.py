"""The ``gptff`` command line: one program, subcommands from the core and from entry points.

* :mod:`.app` — the parser, :func:`command` / :func:`add_commands` / entry-point discovery,
  exit codes (:func:`report_input_errors`, :func:`classify_error`);
* :mod:`.io` — reading structures, printing JSON;
* :mod:`.commands` — ``gptff predict``, ``relax`` and ``models``.
"""

from gptff_core.cli.app import (
    add_commands,
    arg,
    build_parser,
    classify_error,
    command,
    main,
    report_input_errors,
)
from gptff_core.cli.io import dump_json, read_structures

__all__ = [
    "add_commands",
    "arg",
    "build_parser",
    "classify_error",
    "command",
    "dump_json",
    "main",
    "read_structures",
    "report_input_errors",
]
