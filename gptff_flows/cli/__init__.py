"""The workflows' subcommands of ``gptff`` (joined through the ``gptff.commands`` entry points).

:mod:`.eos`, :mod:`.screen`, :mod:`.finetune_md` and :mod:`.results`, one per command;
:mod:`.common` opens job stores and prints tables.
"""
