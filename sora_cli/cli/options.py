"""A command's options, made from the settings table: one Typer option (or argument) per setting the table gives
the command, with its type, default and help, so that no option is spelled in a command's signature."""

from __future__ import annotations

import inspect
from typing import Callable, List, Optional

import typer

from ..settings import BATCH, MODES, Setting, of_command


def with_settings(command: str) -> Callable[[Callable], Callable]:
    """Give `f` the command's settings as parameters, after its own (its input files): Typer reads the signature
    made here, and `f` receives every value as a keyword, None where a setting was not given."""
    def wrap(f: Callable) -> Callable:
        own = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(f, eval_str=True).parameters.values()
               if p.kind is not p.VAR_KEYWORD]
        rows = of_command(command).values()
        arguments = [_parameter(s, command) for s in rows if s.argument]
        options = [_parameter(s, command) for s in rows if not s.argument]

        def run(**values):
            return f(**values)

        run.__name__, run.__qualname__, run.__doc__ = f.__name__, f.__qualname__, f.__doc__
        run.__signature__ = inspect.Signature(arguments + own + options)
        run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
        return run
    return wrap


def _parameter(s: Setting, command: str) -> inspect.Parameter:
    default = ... if s.required else s.default
    if s.argument:
        info = typer.Argument(default, help=s.help)
    else:
        # A switch can be turned off again (`--no-offload`), e.g. after a shell alias turned it on.
        switch = s.kind is bool and not s.short
        names = [f"{s.option}/--no-{s.option[2:]}" if switch else s.option] + ([s.short] if s.short else [])
        info = typer.Option(default, *names, help=_help(s, command))
    kind = List[s.kind] if s.multiple else s.kind
    kind = kind if s.default is not None or s.required else Optional[kind]
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind)


def _help(s: Setting, command: str) -> str:
    if command == BATCH and s.lines and set(s.lines) != set(MODES):  # a default for some lines only
        return f"{s.help} Lines of mode {', '.join(s.lines)} that give none take it."
    return s.help
