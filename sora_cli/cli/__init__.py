"""The `sora` command: one module per command group (generate, edit, batch, train, models), each of which parses its
command line into a request, calls the library, and reports; here the app, and the one place where failures
and stop signals become a message and an exit code.

Results go to stdout (the written path, or one JSON record with --json); progress bars and warnings go to
stderr. torch is imported only inside commands, so `sora --help` is instant.
"""

from __future__ import annotations

import logging
import sys

import typer

from .. import files
from ..errors import SoraError
from ..progress import WarningHandler
from . import batch, edit, generate, models, train

# typer may vendor its own click: take its usage-error class from typer itself.
UsageError = sys.modules[typer.BadParameter.__module__].UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video from the command line.")
DEBUG = False  # --debug: tracebacks for the errors that are otherwise one line
log = logging.getLogger("sora")


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", help="Show the traceback behind an error message.")) -> None:
    """Text-to-video from the command line."""
    global DEBUG
    DEBUG = debug


for command in (generate.generate, edit.extend, edit.loop, edit.connect, edit.edit, batch.batch, models.models):
    app.command()(command)
app.add_typer(train.train_app, name="train")


# Signals that stop a run: each ends it as Ctrl-C does (no partial file), with the shell's exit code 128 + N.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class Stopped(KeyboardInterrupt):
    """A stop signal, raised where the program is, so every open output is cleaned up on the way out."""


def main() -> None:
    import signal

    log.handlers[:] = [WarningHandler()]  # one per run, also when a test calls main() again
    log.setLevel(logging.INFO)  # warnings, and the few info lines (the memory plan)
    log.propagate = False
    if hasattr(sys.stdout, "reconfigure"):  # a path of non-UTF-8 bytes prints as those bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        if not files.hold_stop():  # else raised as soon as the output being opened can be cleaned up
            raise Stopped

    signals = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        code = _run_command()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 130:  # a stop signal, or typer's Abort for a Ctrl-C inside a command
        signum = received[0] if received else signal.SIGINT
        code = 128 + signum
        print("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}",
              file=sys.stderr)
    sys.exit(code)


def _run_command() -> int:
    """Run the command line; every expected failure is one `error:` line and its exit code. A traceback is
    shown only for a bug, or with --debug."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="sora", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `sora`: the help is the answer
            print(e.ctx.get_help() if e.ctx else e.format_message())
            return 0
        return _fail(f"error: {e.format_message()}", 2)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except SoraError as e:
        return _fail(f"error: {e}", e.exit_code)
    except OSError as e:  # disk full, no permission, a file that appeared meanwhile: still one line
        return _fail(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", 1)
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _fail(f"error: out of memory ({first[:200]}); try a smaller --size, fewer frames, or --offload block", 1)


def _out_of_memory(e: BaseException) -> bool:
    """torch's CPU and GPU allocators raise RuntimeErrors (torch.OutOfMemoryError on a GPU) of their own."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text)


def _fail(line: str, code: int) -> int:
    if DEBUG:
        import traceback

        traceback.print_exc()
    print(line, file=sys.stderr)
    return code
