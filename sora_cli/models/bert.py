"""BERT, the encoder of the embedded model's text encoder (all-MiniLM-L6-v2), with its WordPiece tokenizer.

Our own few lines instead of `transformers.BertModel`: importing transformers costs seconds on every start of
`sora`, several times what encoding a prompt with MiniLM does, and a batch of short sora-tiny renders pays it
before the first item. The checkpoint's key names are BERT's own, so the same safetensors load unchanged; the
tokenizer is the checkpoint's tokenizer.json run by the `tokenizers` library.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from ..loading import load_state_dict, read_json, read_tokenizer_file
from . import checks


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"
    model_type: str = "bert"

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        checks.mapping(d, "BERT")
        kwargs = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        checks.whole_numbers(kwargs, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                             "intermediate_size", "max_position_embeddings", "type_vocab_size")
        checks.number(kwargs, "layer_norm_eps", low=0, above=True)
        checks.string(kwargs, "hidden_act", "position_embedding_type", "model_type")
        cfg = cls(**kwargs)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                             f"{cfg.num_attention_heads}")
        if cfg.hidden_act != "gelu" or cfg.position_embedding_type != "absolute":
            raise ModelError(f"BERT text encoder with hidden_act={cfg.hidden_act!r} and position_embedding_type="
                             f"{cfg.position_embedding_type!r} is not supported (only 'gelu' and 'absolute')")
        return cfg


def _table(rows: int, dim: int) -> nn.Embedding:
    """An embedding left uninitialised: its values always come from the checkpoint, and nn.Embedding's normal_
    init, on the meta device the loader builds on, would import torch._dynamo (seconds of start-up)."""
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = _table(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = _table(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = _table(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:  # (B, L) -> (B, L, D); one segment, so token type 0 throughout
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query, self.key, self.value = (nn.Linear(cfg.hidden_size, cfg.hidden_size) for _ in range(3))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (f(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for f in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, H, L, Dh)
        return out.transpose(1, 2).flatten(2)


class DenseNorm(nn.Module):
    """BERT's sublayer exit: project, add the residual, then LayerNorm (post-norm)."""

    def __init__(self, dim_in: int, dim: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim_in, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dense(h))


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(x, mask), x)


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output = DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attention(x, mask)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class BertModel(nn.Module):
    """(B, L) token ids and (B, L) attention mask -> (B, L, D) last hidden states."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x, keep = self.embeddings(ids), mask.bool()
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x

    @classmethod
    def load(cls, folder: Path, dtype: torch.dtype) -> "BertModel":
        try:
            cfg = BertConfig.from_dict(read_json(folder / "config.json"))
        except ValueError as e:
            raise ModelError(f"{folder / 'config.json'} is not supported: {e}") from None
        with torch.device("meta"):
            model = cls(cfg)
        # The pooler (a sentence head) and the position-id buffer are not needed for token states.
        state = {k.removeprefix("bert."): v for k, v in load_state_dict(folder, dtype).items()
                 if not k.removeprefix("bert.").startswith(("pooler.", "embeddings.position_ids"))}
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            detail = str(e).splitlines()[-1].strip()
            raise ModelError(f"{folder} is not a BERT checkpoint of its config.json: {detail}") from None
        return model.eval().requires_grad_(False)


class WordPieceTokenizer:
    """The checkpoint's tokenizer.json, padded and truncated to a fixed length with [CLS] ... [SEP] kept."""

    def __init__(self, folder: Path):
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{path} is missing: the BERT text encoder needs its fast tokenizer file")
        self.tokenizer = read_tokenizer_file(path)

    def count(self, text: str) -> int:
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        return len(self.tokenizer.encode(text).ids)

    def batch(self, texts: list[str], length: int) -> tuple[Tensor, Tensor]:
        """-> (B, length) ids and (B, length) attention mask."""
        self.tokenizer.enable_truncation(length)
        self.tokenizer.enable_padding(length=length)
        encodings = self.tokenizer.encode_batch(texts)
        return (torch.tensor([e.ids for e in encodings]), torch.tensor([e.attention_mask for e in encodings]))
