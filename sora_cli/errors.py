"""The errors a user can cause. The CLI prints their message as one line, without a traceback."""


class SoraError(Exception):
    exit_code = 1


class OptionError(SoraError):
    """A bad option or argument: the message names it and what is allowed."""

    exit_code = 2


class ModelError(SoraError):
    """A model that cannot be found, is incomplete, or does not match its config."""


class BusyError(SoraError):
    """Another process holds what this one needs (a batch's output folder): nothing was done, run again later."""


class OutputError(SoraError):
    """An output that could not be written (a full disk, no permission, ffmpeg refusing): nothing was left."""
