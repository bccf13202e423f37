"""The models sora knows by name: where each comes from, and what it is. torch-free, so that `sora models` and
`--help` stay instant.

Each row names the source (a folder, or a hub repo id), the transformer's parameters in billions (two experts
count twice: both are held), the native size and frame rate sora makes by default, and how the model takes given
frames (--image, --last-image, extend, loop, connect). The embedded model ships inside the package (package
data), so an installed wheel finds it as a checkout does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "sora-tiny"


@dataclass(frozen=True)
class Known:
    source: str
    parameters_b: float
    native: str
    given_frames: str


_T2V = "latent replacement (a text-to-video model)"
_I2V = "native: first frame as input channels (needs --image)"
CATALOG = {
    "sora-tiny": Known(str(WEIGHTS_DIR / "sora-tiny"), 0.005, "64x64, 8 fps",
                       "clean tokens (trained for them): every editing feature"),
    "wan2.1-t2v-1.3b": Known("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 1.3, "832x480, 16 fps", _T2V),
    "wan2.1-t2v-14b": Known("Wan-AI/Wan2.1-T2V-14B-Diffusers", 14, "832x480 (also 1280x720), 16 fps", _T2V),
    "wan2.2-t2v-a14b": Known("Wan-AI/Wan2.2-T2V-A14B-Diffusers", 2 * 14, "1280x720, 16 fps", _T2V),
    "wan2.2-ti2v-5b": Known("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 5, "1280x704, 24 fps",
                            "native: given frames clean at timestep 0"),
    "wan2.1-i2v-14b-480p": Known("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 14, "832x480, 16 fps", _I2V),
    "wan2.1-i2v-14b-720p": Known("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", 14, "1280x720, 16 fps", _I2V),
    "wan2.1-flf2v-14b-720p": Known("Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", 14, "1280x720, 16 fps",
                                   "native: first and last frame (needs both)"),
    "wan2.2-i2v-a14b": Known("Wan-AI/Wan2.2-I2V-A14B-Diffusers", 2 * 14, "1280x720, 16 fps",
                             "native: first, or first and last frame (needs --image)"),
}
KNOWN_MODELS = {name: known.source for name, known in CATALOG.items()}  # the names --model takes

_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def looks_like_repo_id(source: str) -> bool:
    """owner/name, valid for the hub: no "--" or "..", no ".git" ending. Anything else would only reach
    huggingface_hub to be refused there with a traceback."""
    parts = source.split("/")
    return (len(parts) == 2 and all(_REPO_PART.fullmatch(part) for part in parts)
            and "--" not in source and ".." not in source and not source.endswith(".git"))


def hub_id(given: str | None, folder: Path) -> str | None:
    """The hub repo a model comes from, where sora can tell: a known name or a repo id as given, a hub cache
    snapshot (.../models--owner--name/snapshots/...), or a folder named like a known repo. Defaults and step-cache
    calibrations published for a checkpoint follow it wherever it was downloaded to."""
    if given is not None and given.lower() in KNOWN_MODELS:
        return KNOWN_MODELS[given.lower()]
    if given is not None and looks_like_repo_id(given) and not Path(given).exists():
        return given
    for part in reversed(folder.parts):
        if part.startswith("models--") and part.count("--") == 2:
            return part[len("models--"):].replace("--", "/")
    by_name = {source.split("/")[1].lower(): source for source in KNOWN_MODELS.values() if "/" in source
               and looks_like_repo_id(source)}
    return by_name.get(folder.name.lower(), given)


def cached_location(source: str) -> Path | None:
    """Where a model already is on this machine, without contacting the hub."""
    local = Path(source)
    if local.is_dir():
        return local
    if not looks_like_repo_id(source):
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(source, "model_index.json")
    return Path(hit).parent if isinstance(hit, str) else None
