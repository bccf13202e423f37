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

log = logging.getLogger("sora")

# Encoder classes we agree to build from a checkpoint's config; anything else is refused rather than imported.
ENCODER_CLASSES = ("UMT5EncoderModel", "T5EncoderModel", "BertModel")


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
        from ..loading import weight_files

        weight_files(encoder_dir)  # fail early, with a clear message, on missing or pickled weights
        if class_name == "BertModel":  # our own: no transformers import on the embedded model's path
            from .bert import BertModel, WordPieceTokenizer

            return cls(WordPieceTokenizer(tokenizer_dir), BertModel.load(encoder_dir, dtype), max_length)
        import transformers

        transformers.logging.set_verbosity_error()  # our own bars report loading; theirs would interleave
        transformers.logging.disable_progress_bar()
        tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir)))
        model = getattr(transformers, class_name).from_pretrained(str(encoder_dir), dtype=dtype, use_safetensors=True)
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
