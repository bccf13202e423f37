"""sora: text-to-video from the command line.

`from sora_cli import Pipeline` is the stable Python API. torch is imported lazily so
that `sora --help` stays instant.
"""

__version__ = "0.1.0"
__all__ = ["Pipeline", "Video"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
