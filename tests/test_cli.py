"""`sora generate` end to end on a tiny Wan-layout folder: a real MP4, checked with ffmpeg, and clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sora_cli.cli import main
from sora_cli.video import probe, read_metadata


def run_sora(*args: str) -> subprocess.CompletedProcess:
    """The real entry point in a child process, as a shell script would call it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sora_cli", *args], capture_output=True, text=True, env=env)


def call_sora(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (faster: the model loads without a new interpreter)."""
    old = sys.argv
    sys.argv = ["sora", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_generate_writes_a_valid_mp4(tiny_wan_dir, tmp_path):
    out = tmp_path / "fox.mp4"
    result = run_sora("generate", "a red fox running through snow", "--model", str(tiny_wan_dir), "--out", str(out),
                      "--size", "48x32", "--frames", "9", "--fps", "12", "--steps", "2", "--seed", "42")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)

    info = probe(out)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)
    assert info.fps == pytest.approx(12)
    assert info.faststart
    meta = read_metadata(out)
    assert meta["prompt"] == "a red fox running through snow"
    assert meta["seed"] == 42 and meta["steps"] == 2 and meta["sampler"] == "unipc"
    assert meta["passes"] == 1  # a Wan checkpoint's default: one pass
    assert meta["model"] == str(tiny_wan_dir) and meta["width"] == 48 and meta["height"] == 32
    assert {"negative_prompt", "guidance", "shift"} <= meta.keys()
    assert list(tmp_path.iterdir()) == [out], "no temporary files are left behind"


def test_json_record_sidecar_and_automatic_name(tiny_wan_dir, tmp_path, capsys):
    code, out, err = call_sora(capsys, "generate", "snow/../../fox", "--model", str(tiny_wan_dir),
                               "--out", str(tmp_path), "--steps", "1", "--seed", "7", "--seconds", "1",
                               "--metadata", "json", "--json", "--quiet")
    assert code == 0, err
    record = json.loads(out)
    path = Path(record["path"])
    assert path.parent == tmp_path and path.name.endswith("_7_snow-fox.mp4")
    assert record["seed"] == 7 and record["num_frames"] == 9  # 1 s at the model's 8 fps -> 4n+1 frames
    assert json.loads(path.with_suffix(".json").read_text())["prompt"] == "snow/../../fox"
    assert probe(path).num_frames == 9


def test_aspect_and_resolution(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "tall.mp4"
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out),
                             "--aspect", "9:16", "--resolution", "32p", "--frames", "1", "--steps", "1", "--quiet")
    assert code == 0, err
    assert (probe(out).width, probe(out).height) == (32, 48)


def test_snapping_is_reported(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "snap.mp4"
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out),
                             "--size", "40x30", "--frames", "6", "--steps", "1", "--quiet")
    assert code == 0, err
    assert "using 48x32" in err and "using 5" in err
    assert probe(out).num_frames == 5


@pytest.mark.parametrize("args,needle", [
    (["--size", "big"], "--size"),
    (["--sampler", "ddim"], "--sampler"),
    (["--passes", "3"], "--passes"),
    (["--steps", "0"], "--steps"),
    (["--steps", "many"], "--steps"),
    (["--aspect", "wide"], "--aspect"),
    (["--frames", "9", "--seconds", "2"], "--seconds"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:99"], "--device"),  # well formed, but no such GPU here
    (["--metadata", "xml"], "--metadata"),
    (["--out", "clip.avi"], "--out"),
])
def test_bad_options_give_one_line_and_exit_2(tiny_wan_dir, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--quiet", *args)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_training_on_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, device):
    code, out, err = call_sora(capsys, "train", "dit", "--device", device, "--out", str(tmp_path / "model"),
                               "--work-dir", str(tmp_path / "runs"))
    assert code == 2 and "--device" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"precious")
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out), "--quiet")
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir), "--out", str(out),
                             "--frames", "1", "--steps", "1", "--overwrite", "--quiet")
    assert code == 0, err
    assert probe(out).codec == "h264"


def test_missing_or_incomplete_model_is_named(tiny_wan_dir, tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(tmp_path / "nowhere"), "--quiet")
    assert code != 0 and "nowhere" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((tiny_wan_dir / "model_index.json").read_text())
    code, _, err = call_sora(capsys, "generate", "fox", "--model", str(broken), "--quiet")
    assert code != 0 and "transformer/ is missing" in err
    code, _, err = call_sora(capsys, "generate", "fox", "--model", "someone/not-cached", "--offline", "--quiet")
    assert code != 0 and "not in the local cache" in err


def test_models_lists_known_models(capsys):
    code, out, _ = call_sora(capsys, "models", "--json")
    assert code == 0
    names = {row["name"]: row for row in json.loads(out)}
    assert names["wan2.1-t2v-1.3b"]["source"] == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert names["sora-tiny"]["default"]
    ti2v = names["wan2.2-ti2v-5b"]
    assert (ti2v["parameters_b"], ti2v["native"], ti2v["weights_gb"]) == (5, "1280x704, 24 fps", 10)
    assert all(row["given_frames"] and row["native"] for row in names.values())
    assert names["wan2.1-t2v-1.3b"]["caches"] == ["first-block", "magcache", "teacache"]
    assert names["wan2.2-ti2v-5b"]["caches"] == ["first-block"]  # the others need `--cache calibrate` first


def test_help_does_not_import_torch():
    code = "import sys; from sora_cli.cli import app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
