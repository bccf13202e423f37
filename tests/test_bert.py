"""Our BERT (the embedded model's text encoder) against transformers' BertModel and tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from sora_cli.loading import TEXT_ENCODER_PACKAGES, text_encoder_dirs
from sora_cli.models.bert import BertModel, WordPieceTokenizer
from sora_cli.models.text_encoder import TextEncoder

PROMPTS = ["a red circle moving right on a black background", "", "A  Yellow  BALL, bouncing!",
           "café au lait — ünïcödé and emoji 🎈", "snow " * 60]
MINILM = text_encoder_dirs(Path(), {"_sora": {"text_encoder_package": TEXT_ENCODER_PACKAGES[0]}})[0]


@pytest.fixture(scope="module")
def reference():
    return (transformers.BertModel.from_pretrained(str(MINILM), use_safetensors=True).eval(),
            transformers.AutoTokenizer.from_pretrained(str(MINILM)))


def test_tokens_match_the_reference_tokenizer(reference):
    theirs = reference[1]
    ours = WordPieceTokenizer(MINILM)
    ids, mask = ours.batch(PROMPTS, 40)
    expected = theirs(PROMPTS, padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    assert [ours.count(p) for p in PROMPTS] == [len(theirs(p)["input_ids"]) for p in PROMPTS]
    assert ours.count(PROMPTS[-1]) > 40  # counting does not truncate


def test_minilm_hidden_states_match_the_reference(reference):
    theirs, tokenizer = reference
    ours = BertModel.load(MINILM, torch.float32)
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**tokens).last_hidden_state
        got = ours(tokens["input_ids"], tokens["attention_mask"])
    keep = tokens["attention_mask"].bool()
    assert torch.allclose(got[keep], expected[keep], atol=1e-5), (got[keep] - expected[keep]).abs().max()


def test_a_random_bert_saved_by_transformers_loads_and_matches(tmp_path):
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    theirs = transformers.BertModel(cfg).eval()
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    ours = BertModel.load(tmp_path, torch.float32)
    ids = torch.randint(0, 99, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


def test_the_embedded_model_starts_without_heavy_imports():
    """The point of bert.py, and of building modules without init on the meta device: loading sora-tiny and
    rendering imports neither transformers nor torch._dynamo (seconds each, more than a whole render)."""
    import subprocess
    import sys

    code = ("import sys; from sora_cli import Pipeline; p = Pipeline.from_pretrained('sora-tiny', device='cpu'); "
            "p('a red circle', num_frames=5, num_steps=2, seed=0); "
            "print([m for m in ('transformers', 'torch._dynamo') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_text_encoder_uses_our_bert_for_minilm():
    encoder = TextEncoder.load(MINILM, MINILM, "BertModel", 16, torch.float32)
    assert isinstance(encoder.model, BertModel) and encoder.dim == 384
    context = encoder.encode(["a red circle", ""])
    assert context.shape == (2, 16, 384) and context[1, 2:].abs().sum() == 0
