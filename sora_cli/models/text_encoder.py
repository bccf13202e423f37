"""Text encoder: a pretrained encoder whose token-level hidden states the DiT attends to.

Wan uses the UMT5-XXL encoder (run by `transformers`); the embedded model uses MiniLM, a BERT (our own
`bert.py`). Both go through the same path:
tokenize to a fixed length, run the encoder, and zero every position past the prompt's own tokens, as the
reference does, so padding never leaks into cross-attention.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ModelError
from ..loading import first_line, read_tokenizer_file
from . import checks

log = logging.getLogger("sora")

# Encoder classes we agree to build from a checkpoint's config; anything else is refused rather than imported.
ENCODER_CLASSES = ("UMT5EncoderModel", "T5EncoderModel", "BertModel")
T5_CLASSES = ("UMT5EncoderModel", "T5EncoderModel")


def clean_prompt(text: str) -> str:
    """Undo HTML escapes and fold whitespace, as the reference pipeline does before tokenizing."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class HFTokenizer:
    """A `transformers` tokenizer behind the same two calls as `bert.WordPieceTokenizer`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def batch(self, texts: list[str], length: int) -> tuple[Tensor, Tensor]:
        tokens = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return tokens["input_ids"], tokens["attention_mask"]


def _auto_tokenizer(transformers, folder: Path):
    """transformers' tokenizer for a folder. Its files are checked first: transformers meets a damaged one deep
    inside, with whatever error that happens to raise."""
    from ..loading import read_json

    if not folder.is_dir() or not any(folder.iterdir()):
        raise ModelError(f"{folder} is missing or empty: the tokenizer's files are gone (download the model again)")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            config = read_json(folder / name)
            if not isinstance(config.get("tokenizer_class", ""), (str, type(None))):
                raise ModelError(f"{folder / name}: \"tokenizer_class\" must be a class name")
    if (folder / "tokenizer.json").exists():
        read_tokenizer_file(folder / "tokenizer.json")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ModelError(f"the tokenizer in {folder} could not be loaded: {first_line(e)} "
                         "(download the model again)") from None


class TextEncoder:
    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int):
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length

    @classmethod
    def load(cls, encoder_dir: Path, tokenizer_dir: Path, class_name: str, max_length: int,
             dtype: torch.dtype) -> "TextEncoder":
        if class_name not in ENCODER_CLASSES:
            raise ModelError(f"text encoder class '{class_name}' is not supported "
                             f"(supported: {', '.join(ENCODER_CLASSES)})")
        from ..loading import read_json, verify_weights

        # Fail early, naming the file: a config.json that is missing or not a JSON object, missing or pickled
        # weights, a damaged safetensors file. Met inside transformers, each would be a traceback.
        config = read_json(encoder_dir / "config.json")
        if class_name in T5_CLASSES:  # sizes transformers would build from unchecked (a 0 is only a torch warning)
            try:
                checks.whole_numbers(config, "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                                     "relative_attention_num_buckets", "relative_attention_max_distance")
            except ValueError as e:
                raise ModelError(f"{encoder_dir / 'config.json'} is not supported: {e}") from None
        verify_weights(encoder_dir)
        if class_name == "BertModel":  # our own: no transformers import on the embedded model's path
            from .bert import BertModel, WordPieceTokenizer

            return cls(WordPieceTokenizer(tokenizer_dir), BertModel.load(encoder_dir, dtype), max_length)
        import transformers

        transformers.logging.set_verbosity_error()  # our own bars report loading; theirs would interleave
        transformers.logging.disable_progress_bar()
        tokenizer = HFTokenizer(_auto_tokenizer(transformers, tokenizer_dir))
        try:
            model = getattr(transformers, class_name).from_pretrained(str(encoder_dir), dtype=dtype,
                                                                      use_safetensors=True)
        except RuntimeError as e:  # transformers' size mismatch between config.json and the weights
            detail = first_line(e)
            if "ignore_mismatched_sizes" in detail:  # its report of which sizes differ is logged, and silenced
                detail = "the weights' shapes differ from it"
            raise ModelError(f"{encoder_dir} does not match its config.json: {detail}") from None
        except (OSError, ValueError) as e:
            raise ModelError(f"the text encoder in {encoder_dir} could not be loaded: {first_line(e)} "
                             "(download the model again)") from None
        return cls(tokenizer, _LastHidden(model.eval().requires_grad_(False)), max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        """prompts -> (B, max_length, D) hidden states, zero past each prompt's length."""
        prompts = [clean_prompt(p) for p in prompts]
        for p in prompts:
            n = self.tokenizer.count(p)
            if n > self.max_length:
                log.warning("prompt is %d tokens long; the model reads %d, so the rest is ignored: %.60s...",
                            n, self.max_length, p)
        ids, mask = (t.to(self.device) for t in self.tokenizer.batch(prompts, self.max_length))
        hidden = self.model(ids, mask)  # (B, L, D)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)


class _LastHidden(torch.nn.Module):
    """A `transformers` encoder called like ours: (ids, mask) -> last hidden states."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.inner(input_ids=ids, attention_mask=mask).last_hidden_state
