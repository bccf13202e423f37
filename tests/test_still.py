"""Stills: a one-frame render written as an image (PNG by default, JPEG and WebP on request) with the settings as
metadata, exactly the frame the pipeline made, from `generate` and from batch lines; an image asked of a render of
several frames is one error line and no file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sora_cli import Pipeline
from sora_cli.still import read_image_metadata
from test_cli import call_sora

PROMPT = "a red circle on a black background"


def test_one_frame_is_a_png_holding_the_frame_and_the_settings(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    code, out, err = call_sora(capsys, "generate", PROMPT, "--frames", "1", "--seed", "3", "--steps", "4")
    assert code == 0, err
    path = tmp_path / out.strip().rsplit("/", 1)[-1]
    assert path.suffix == ".png" and path.is_file()
    metadata = read_image_metadata(path)
    assert (metadata["prompt"], metadata["seed"], metadata["num_frames"], metadata["passes"]) == (PROMPT, 3, 1, 1)
    with Image.open(path) as image:
        assert image.info["Title"] == PROMPT
        pixels = np.asarray(image.convert("RGB"))
    made = Pipeline.from_pretrained(None, device="cpu")(PROMPT, num_frames=1, seed=3, num_steps=4).frames
    assert made.shape == (1, 64, 64, 3) and np.array_equal(pixels, made[0])  # lossless: the frame itself


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_carry_the_settings_too(tmp_path, capsys, suffix):
    prompt = "a blue star on a white background, déjà vu ✨"
    out = tmp_path / f"still{suffix}"
    code, _, err = call_sora(capsys, "generate", prompt, "--frames", "1", "--steps", "2", "--out", str(out),
                             "--metadata", "json")
    assert code == 0, err
    assert read_image_metadata(out)["prompt"] == prompt
    assert json.loads(out.with_suffix(".json").read_text())["prompt"] == prompt  # the sidecar, beside it


def test_an_image_of_several_frames_is_refused(tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", PROMPT, "--out", str(tmp_path / "x.png"))
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and "--frames 1" in err
    assert list(tmp_path.iterdir()) == []


def test_batch_lines_make_stills(tmp_path, capsys):
    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps({"prompt": PROMPT, "frames": 1, "seed": 1}) + "\n"
                    + json.dumps({"prompt": PROMPT, "frames": 1, "seed": 2, "out": "named.webp"}) + "\n")
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(tmp_path / "out"), "--steps", "2")
    assert code == 0, err
    gallery = ("grid.png", "index.html", "thumbs")
    made = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".jsonl" and p.name not in gallery)
    assert made[0].endswith("_1_a-red-circle-on-a-black-background.png") and made[1] == "named.webp", made
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": PROMPT, "out": "x.png"}) + "\n")
    code, _, err = call_sora(capsys, "batch", str(bad), "--out-dir", str(tmp_path / "out2"), "--dry-run")
    assert code == 2 and "holds one frame" in err


def test_preview_writes_a_contact_sheet_of_the_video(tmp_path, capsys):
    from PIL import Image

    from sora_cli.video import read_video

    out = tmp_path / "clip.mp4"
    code, _, err = call_sora(capsys, "generate", PROMPT, "--steps", "2", "--seed", "4", "--preview", "--out",
                             str(out))
    assert code == 0, err
    sheet_path = tmp_path / "clip.preview.png"
    with Image.open(sheet_path) as image:
        sheet = np.asarray(image.convert("RGB"))
    assert sheet.shape == (2 * 64 + 2, 4 * 64 + 6, 3)  # 8 of the 17 frames, 4 a row, 2-pixel gaps
    frames, _ = read_video(out)
    for tile, index in ((sheet[:64, :64], 0), (sheet[66:, 198:], 16)):  # the first frame, and the last
        assert np.abs(tile.astype(int) - frames[index].astype(int)).mean() < 3  # the MP4 is lossy, the sheet not
    assert read_image_metadata(sheet_path)["seed"] == 4


def test_batch_lines_may_ask_for_previews(tmp_path, capsys):
    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps({"prompt": PROMPT, "seed": 1, "preview": True}) + "\n"
                    + json.dumps({"prompt": PROMPT, "seed": 2}) + "\n")
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(tmp_path / "out"), "--steps", "1",
                             "--frames", "5")
    assert code == 0, err
    previews = [p.name for p in (tmp_path / "out").glob("*.preview.png")]
    assert len(previews) == 1 and previews[0].startswith("0001_1_"), previews
