"""Text users type, read into the values the program uses: sizes, aspect ratios, resolutions, devices, dtypes,
LoRA paths and free text. Each refuses a value with one line naming it and saying what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import OptionError

MAX_SIDE = 4096  # 4K; the VAE alone would need tens of GB a frame beyond it
MAX_PROMPT = 10_000  # characters; text encoders read 512 tokens at most, and a prompt goes into the MP4's tags
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise OptionError(f"--size '{text}' is not WIDTHxHEIGHT with positive whole numbers, e.g. 832x480")
    for side in (int(m[1]), int(m[2])):
        check_side(f"--size {text.strip()}", side)
    return int(m[1]), int(m[2])


def parse_aspect(text: str) -> float:
    """'16:9' -> 16/9 (width over height)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:/]\s*(\d+(?:\.\d+)?)\s*", text)
    if not m or float(m[1]) == 0 or float(m[2]) == 0:
        raise OptionError(f"--aspect '{text}' is not W:H with positive numbers, e.g. 16:9, 9:16, 1:1, 4:3")
    ratio = float(m[1]) / float(m[2])
    if not 0.2 <= ratio <= 5:
        raise OptionError(f"--aspect '{text}' is too extreme; allowed: between 1:5 and 5:1")
    return ratio


def parse_resolution(text: str | int) -> int:
    """'480p' -> 480, the length of the short side."""
    m = re.fullmatch(r"\s*(\d+)\s*[pP]?\s*", str(text))
    if not m or int(m[1]) == 0:
        raise OptionError(f"--resolution '{text}' is not a short-side length such as 480p or 720p")
    check_side(f"--resolution {str(text).strip()}", int(m[1]))
    return int(m[1])


def parse_device(name: str) -> str:
    """'cuda', 'cuda:1', 'mps' or 'cpu'; whether this machine has it is checked when the model is loaded."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name.strip().lower()):
        raise OptionError(f"--device '{name}' is not allowed; choose cpu, cuda, cuda:N or mps")
    return name.strip().lower()


def parse_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' (a torch dtype name)."""
    if name.lower() not in DTYPES:
        raise OptionError(f"--dtype '{name}' is not allowed; choose one of: float32, bfloat16, float16")
    return DTYPES[name.lower()]


def split_lora(text: str) -> tuple[Path, float]:
    """`PATH` or `PATH:SCALE` -> (path, scale); a path may hold ':' itself: only a number after the last is a
    scale."""
    path, _, scale = text.rpartition(":")
    try:
        return (Path(path), float(scale)) if path else (Path(text), 1.0)
    except ValueError:
        return Path(text), 1.0


def parse_lora(text: str) -> tuple[Path, float]:
    """`PATH` or `PATH:SCALE` -> (path, scale): a .safetensors file that exists, a scale from -100 to 100 (1 if
    none is given)."""
    path, value = split_lora(text)
    if not -100 <= value <= 100:  # NaN fails this too
        raise OptionError(f"--lora {text}: the scale must be a number from -100 to 100")
    if path.suffix.lower() != ".safetensors":
        raise OptionError(f"--lora {text}: LoRAs are read from .safetensors files only (never pickles)")
    if not path.is_file():
        raise OptionError(f"--lora {text}: no such file")
    return path, value


def parse_weights_file(text: str) -> Path:
    """A single-file transformer: a .gguf or .safetensors file that exists (never a pickle)."""
    path = Path(text)
    if path.suffix.lower() not in (".gguf", ".safetensors"):
        raise OptionError(f"--transformer {text}: single-file transformers are read from .gguf or .safetensors "
                          "files only (never pickles)")
    if not path.is_file():
        raise OptionError(f"--transformer {text}: no such file")
    return path


def check_side(label: str, value: int, high: int = MAX_SIDE, why: str = "4K") -> None:
    if not 1 <= value <= high:
        raise OptionError(f"{label}: a side of {value} pixels is not allowed; at most {high} ({why})")


def check_text(what: str, text: str | None, blank_ok: bool = True) -> None:
    """Text the user gave: UTF-8 (a shell passes a prompt's bytes through undecoded, Python keeps those as lone
    surrogates, and JSON can spell them as escapes), at most MAX_PROMPT characters, and, unless `blank_ok`, more
    than white space."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise OptionError(f"{what} is not valid UTF-8 text ({byte} at character {e.start + 1}); "
                          f"write it in UTF-8") from None
    if not blank_ok and not text.strip():
        raise OptionError(f"{what} is empty; say what the video shows")
    if len(text) > MAX_PROMPT:
        raise OptionError(f"{what} is {len(text)} characters long; at most {MAX_PROMPT} are allowed (a text "
                          f"encoder reads 512 tokens at most)")
