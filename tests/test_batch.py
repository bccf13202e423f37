"""`sora batch` on a tiny random Wan-layout model: prompt files, names, manifest, resume, failures, kills, torchrun,
and lines for the editing commands, which must render what the commands themselves render."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import save_tiny_wan
from sora_cli import manifest
from sora_cli.batch import groups
from sora_cli.batch_file import line_seed, read_batch
from sora_cli.mp4 import write_mp4
from sora_cli.video import probe, read_metadata, read_video
from test_cli import call_sora, run_sora
from test_editing import moving_square

PROMPT = "a red square moving right"


def fast(model: Path, *extra: str) -> list[str]:
    # 5 frames, 2 latent ones: as fast, and a video (a one-frame item is written as an image)
    return ["--model", str(model), "--steps", "1", "--frames", "5", "--quiet", *extra]


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def videos(out_dir: Path) -> list[str]:
    """The finished videos in `out_dir` (not the hidden temporary files of unfinished ones)."""
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.mp4") if not p.name.startswith("."))


def finished_folder(out_dir: Path) -> list[str]:
    """What a batch that wrote `videos(out_dir)` leaves in its folder: the videos, the manifest and the gallery,
    whose thumbnails are one a video (and nowhere a hidden part file)."""
    thumbs = sorted(p.name for p in (out_dir / "thumbs").iterdir())
    assert thumbs == sorted(name + ".png" for name in videos(out_dir))
    return sorted([*videos(out_dir), "manifest.jsonl", "grid.png", "index.html", "thumbs"])


def test_txt_lines_seeds_and_names(tmp_path):
    file = tmp_path / "p.txt"
    file.write_text("# a comment\n\na red fox\n   \n  shot #2: snow/../../falls  \n")
    batch = read_batch(str(file), tmp_path / "out", {"steps": 3}, repeat=2)
    assert batch.errors == []
    assert [(i.line, i.prompt) for i in batch.items] == [(3, "a red fox")] * 2 + [(5, "shot #2: snow/../../falls")] * 2
    fox = line_seed(3, "a red fox")
    assert [i.seed for i in batch.items[:2]] == [fox, fox + 1]
    assert batch.items[0].name == f"0003_{fox}_a-red-fox.mp4"
    assert batch.items[2].name.startswith("0005_") and batch.items[2].name.endswith("_shot-2-snow-falls.mp4")
    assert all(i.request.steps == 3 for i in batch.items)
    # The derived seed depends on the line alone: not on other settings, the repeat count or the call.
    again = read_batch(str(file), tmp_path / "elsewhere", {"steps": 9, "size": "64x64"})
    assert [i.seed for i in again.items] == [fox, batch.items[2].seed]


def test_jsonl_lines_override_the_command_line(tmp_path):
    file = tmp_path / "p.jsonl"
    lines = [dict(prompt="fox"),
             dict(prompt="tall fox", aspect="9:16", steps=1, seed=11),
             dict(prompt="long fox", seconds=2.5, negative="", guidance=1),
             dict(prompt="named", out="shots/intro.mp4", repeat=2, seed=5, resolution=480)]
    file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cli = dict(size="64x64", frames=9, steps=4, seed=100, negative="blurry")
    fox, tall, long, named, named2 = read_batch(str(file), tmp_path, cli).items
    assert (fox.request.size, fox.request.frames, fox.request.steps, fox.seed) == ((64, 64), 9, 4, 100)
    assert fox.request.negative == "blurry"
    # A line's aspect replaces the command line's size; its seed and steps replace theirs.
    assert (tall.request.size, tall.request.aspect, tall.request.steps, tall.seed) == (None, 9 / 16, 1, 11)
    assert tall.name == "0002_11_tall-fox.mp4"
    assert (long.request.frames, long.request.seconds, long.request.negative) == (None, 2.5, "")
    assert long.request.guidance == 1 and long.request.size == (64, 64)
    assert (named.name, named2.name) == ("shots/intro_5.mp4", "shots/intro_6.mp4")
    assert named.request.resolution == 480 and named.request.size is None


def test_every_bad_line_is_reported_with_its_number(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)  # a folder inside DIR that leads out of it
    (tmp_path / "clip.mp4").write_bytes(b"")
    bad = {
        2: ('{"prompt": "x"', "not valid JSON"),
        3: ('["a list"]', "one JSON object"),
        4: ('{"prompt": "x", "stpes": 3}', "unknown field 'stpes'"),
        5: ('{"prompt": "x", "steps": true}', "'steps' must be a whole number"),
        6: ('{"prompt": "x", "steps": "many"}', "'steps' must be a whole number"),
        7: ('{"steps": 2}', "'prompt' is missing"),
        8: ('{"prompt": "  "}', "prompt is empty"),
        9: ('{"prompt": "x", "size": "64x64", "aspect": "1:1"}', "--size cannot be combined"),
        10: ('{"prompt": "x", "sampler": "ddim"}', "--sampler 'ddim'"),
        11: ('{"prompt": "x", "out": "../x.mp4"}', "stays inside"),
        12: ('{"prompt": "x", "out": "/tmp/x.mp4"}', "stays inside"),
        13: ('{"prompt": "x", "out": "a/../../x.mp4"}', "stays inside"),
        14: ('{"prompt": "x", "out": "link/x.mp4"}', "stays inside"),
        15: ('{"prompt": "x", "out": "x.avi"}', ".mp4 file name"),
        17: ('{"prompt": "y", "out": "good.mp4"}', "also the output of line 16"),
        18: ('{"prompt": "x", "mode": "dance"}', "mode 'dance' is not allowed"),
        19: ('{"prompt": "x", "video": "clip.mp4"}', "'video' needs a mode"),
        20: ('{"mode": "connect", "video": "clip.mp4"}', "a list of two video files"),
        21: ('{"mode": "extend", "video": "missing.mp4"}', "'missing.mp4' does not exist"),
        22: ('{"prompt": "x", "repeat": 0}', "--repeat 0"),
        23: ('{"prompt": "x", "seed": -1}', "--seed -1"),
        25: ('{"mode": "extend", "video": "clip.mp4", "strength": 0.5}', "mode 'extend' does not take 'strength'"),
        26: ('{"prompt": "x", "loop": "yes"}', "'loop' must be true or false"),
        27: ('{"mode": "edit", "prompt": "x", "video": "clip.mp4", "strength": 2}', "--strength 2"),
        28: ('{"mode": "loop", "video": "clip.mp4", "fit": "zoom"}', "--fit 'zoom'"),
        29: ('{"mode": "connect", "video": ["clip.mp4", "clip.mp4"], "seconds": 0}', "--seconds 0"),
        30: ('{"mode": "edit", "prompt": "x", "video": "clip.mp4", "frames": 9}', "does not take 'frames'"),
        31: ('{"prompt": "x", "image": "out"}', "'out' is not a file"),
        33: ('{"prompt": "x", "passes": 3}', "--passes 3"),
        34: ('{"mode": "extend", "video": "clip.mp4", "passes": 2}', "mode 'extend' does not take 'passes'"),
    }
    good = {1: '{"prompt": "fine"}', 16: '{"prompt": "x", "out": "good.mp4"}',
            24: '{"mode": "loop", "video": "clip.mp4"}',
            32: '{"mode": "extend", "video": "clip.mp4", "seconds": 1.5, "backward": true, "fit": "pad"}',
            35: '{"prompt": "one pass", "passes": 1}'}
    text = {**{n: line for n, (line, _) in bad.items()}, **good}
    file = tmp_path / "p.jsonl"
    file.write_text("\n".join(text[n] for n in sorted(text)) + "\n")
    batch = read_batch(str(file), out)
    assert [n for n, _ in batch.errors] == sorted(bad)
    for n, message in batch.errors:
        assert bad[n][1] in message, (n, message)
    assert [i.line for i in batch.items] == [1, 16, 24, 32, 35]
    assert batch.items[4].request.passes == 1 and batch.items[0].request.passes is None
    loop, extend = batch.items[2:4]
    assert loop.inputs == (str(tmp_path / "clip.mp4"),) and loop.name == f"0024_{loop.seed}_clip.mp4"
    assert (extend.request.seconds, extend.request.backward, extend.request.fit) == (1.5, True, "pad")
    spec = SimpleNamespace(defaults=SimpleNamespace(width=64, height=64, fps=8), size_multiple=16)
    assert "num_frames" not in extend.request.pipeline_kwargs(spec), "an extend line's seconds are the seconds it adds"


def test_groups_are_consecutive_text_to_video_items_with_the_same_settings(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    lines = [dict(prompt="a", repeat=3), dict(prompt="b", seed=1), dict(prompt="c", steps=2), dict(prompt="d"),
             dict(prompt="e", loop=True), dict(prompt="f"), dict(mode="extend", video="clip.mp4"), dict(prompt="g")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = read_batch(str(tmp_path / "p.jsonl"), tmp_path / "out", {"steps": 4}).items
    lines_of = lambda units: [[items[i].line for i in unit] for unit in units]  # noqa: E731
    everything = list(range(len(items)))
    # seeds may differ; other settings, loops and inputs end a group, as does its size
    assert lines_of(groups(items, everything, 4)) == [[1, 1, 1, 2], [3], [4], [5], [6], [7], [8]]
    assert lines_of(groups(items, everything, 2)) == [[1, 1], [1, 2], [3], [4], [5], [6], [7], [8]]
    assert lines_of(groups(items, everything, 1)) == [[line] for line in [1, 1, 1, 2, 3, 4, 5, 6, 7, 8]]
    # what is left to do after a resume is grouped afresh: line 4 now follows line 2
    assert lines_of(groups(items, [0, 2, 3, 5, 6], 4)) == [[1, 1, 2, 4], [5]]


def test_auto_batch_size_groups_small_clips_by_eight_and_leaves_large_ones_alone(tiny_wan_dir, tmp_path):
    from sora_cli.batch import auto_batch_size
    from sora_cli.settings import parse_batch_size
    from sora_cli.errors import OptionError
    from sora_cli.spec import ModelSpec

    # the tiny model: 16 pixels a token side, 4 frames a latent frame; default 48x32, 9 frames = 3 x 3 x 2 tokens
    lines = [dict(prompt="small", size="64x64", frames=1, repeat=10), dict(prompt="default", repeat=3),
             dict(prompt="wide", size="1024x512", frames=1, repeat=2), dict(prompt="long", size="256x256", frames=21, repeat=6)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = read_batch(str(tmp_path / "p.jsonl"), tmp_path / "out").items
    spec = ModelSpec.read(tiny_wan_dir)
    assert [spec.tokens(64, 64, 1), spec.tokens(48, 32, 9), spec.tokens(1024, 512, 1), spec.tokens(256, 256, 21)] \
        == [16, 18, 2048, 1536]
    reads = []
    size = auto_batch_size(lambda: reads.append(1) or spec)
    units = groups(items, list(range(len(items))), size)
    # 8 at most; 4096 // 2048 = 2 wide clips; 4096 // 1536 = 2 long ones
    assert [len(u) for u in units] == [8, 2, 3, 2, 2, 2, 2]
    assert [items[u[0]].prompt for u in units] == ["small"] * 2 + ["default", "wide"] + ["long"] * 3
    assert len(reads) == 1, "the configs are read once"
    assert [parse_batch_size(text) for text in ("auto", "AUTO", "1", "12")] == [None, None, 1, 12]
    for text in ("0", "-2", "eight"):
        with pytest.raises(OptionError, match=f"--batch-size {text} is not allowed; use auto or a whole count"):
            parse_batch_size(text)


def test_by_default_small_items_are_denoised_together(tiny_wan_dir, tmp_path, capsys, monkeypatch):
    from sora_cli import editing

    sizes, real = [], editing.generate_many
    monkeypatch.setattr(editing, "generate_many", lambda pipe, prompts, *a, **k: sizes.append(len(prompts)) or
                        real(pipe, prompts, *a, **k))
    file = tmp_path / "p.txt"
    file.write_text("a red fox\n" * 10)
    code, stdout, err = call_sora(capsys, "batch", str(file), "--out-dir", str(tmp_path / "out"), *fast(tiny_wan_dir))
    assert code == 0, err
    assert sizes == [8, 2] and len(stdout.splitlines()) == 10 == len(videos(tmp_path / "out"))


def test_command_line_lengths_apply_to_generate_lines_only(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "fox"}\n{"mode": "loop", "video": "clip.mp4"}\n'
                    '{"mode": "extend", "video": "clip.mp4", "seconds": 3}\n')
    cli = dict(seconds=2.0, fps=12, aspect="16:9", size=None, steps=3, seed=1)
    fox, loop, extend = read_batch(str(file), tmp_path, cli).items
    assert (fox.request.seconds, fox.request.fps, fox.request.aspect) == (2.0, 12, 16 / 9)
    assert (loop.request.seconds, loop.request.fps, loop.request.aspect) == (None,) * 3
    assert (loop.request.steps, loop.seed, extend.request.seconds) == (3, 1, 3)


def test_bad_file_fails_up_front_and_dry_run_reports_every_line(tiny_wan_dir, tmp_path, capsys, monkeypatch):
    from sora_cli.pipeline import Pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr(Pipeline, "from_pretrained", no_model)
    file, out = tmp_path / "p.jsonl", tmp_path / "out"
    file.write_text('{"prompt": "ok"}\n{"prompt": "x", "steps": 0}\n\n{"prompt": "x", "out": "../up.mp4"}\n')
    code, stdout, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir), "--dry-run")
    assert code == 2 and f"{file}:2: --steps 0" in err and f"{file}:4: 'out'" in err
    assert stdout.strip().endswith("_ok.mp4")  # the good line is still listed
    code, stdout, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir))
    assert code == 2 and stdout == "" and "nothing was rendered" in err and not out.exists()
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), "--steps", "0")
    assert code == 2 and err.strip() == ("error: --steps 0 is not allowed; use a whole number of steps from 1 to 1000 "
                                       "(a flow schedule's 1000 timesteps)")
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), "--batch-size", "0")
    assert code == 2 and err.strip() == "error: --batch-size 0 is not allowed; use auto or a whole count from 1 to 64"

    # Inputs are found next to the prompt file: a missing one is a bad line (exit 2), one that cannot be decoded
    # an item that would fail (exit 3); both are found without a model.
    (tmp_path / "clip.mp4").write_bytes(b"")
    file.write_text('{"prompt": "ok"}\n{"mode": "extend", "video": "clip.mp4"}\n'
                    '{"prompt": "x", "image": "gone.png"}\n')
    code, stdout, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir),
                                  "--dry-run", "--json")
    assert code == 2 and f"{file}:3: input file 'gone.png' does not exist (looked in {tmp_path})" in err
    assert f"{file}:2: cannot read {tmp_path / 'clip.mp4'}" in err
    assert [json.loads(x)["status"] for x in stdout.splitlines()] == ["to render", "would fail"]
    file.write_text('{"prompt": "ok"}\n{"mode": "extend", "video": "clip.mp4"}\n')
    code, stdout, err = call_sora(capsys, "batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir), "--dry-run")
    assert code == 3 and stdout.strip().endswith("_ok.mp4") and err.startswith(f"error: {file}:2: cannot read")


@pytest.fixture(scope="module")
def window_17(tmp_path_factory) -> Path:
    """A tiny model whose window (17 frames) holds a short clip and new frames, as in test_editing."""
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan-17"), num_frames=17)


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A 9-frame clip of a moving square at the model's size and fps, and a still of its first frame."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    clip = write_mp4(moving_square(9), folder / "in.mp4", 8.0)
    iio.imwrite(folder / "first.png", moving_square(1)[0])
    return clip, folder / "first.png"


def test_editing_lines_render_record_and_resume(window_17, tmp_path, capsys):
    clip, image = write_inputs(tmp_path / "project")
    file = tmp_path / "project" / "shots.jsonl"  # the inputs are named relative to the prompt file's folder
    lines = [dict(prompt=PROMPT, image="first.png", frames=9),
             dict(mode="extend", video="in.mp4", seconds=2),
             dict(mode="extend", video="in.mp4", seconds=1, backward=True, prompt=PROMPT),
             dict(mode="loop", video="in.mp4", duration=3),
             dict(mode="connect", video=["in.mp4", "in.mp4"], seconds=1),
             dict(mode="edit", video="in.mp4", prompt="a cat", strength=0.5),
             dict(prompt=PROMPT, loop=True, seconds=2)]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    args = ["batch", str(file), "--out-dir", str(out), "--model", str(window_17), "--steps", "2", "--seed", "1",
            "--frames", "5", "--quiet"]  # --frames: for generate lines that give no length of their own
    code, stdout, err = call_sora(capsys, *args, "--dry-run")
    assert code == 0 and len(stdout.splitlines()) == 7, err
    code, stdout, err = call_sora(capsys, *args)
    assert code == 0, err
    paths = [Path(p) for p in stdout.splitlines()]
    # image: the line's 9; extend: 9 + 16, 8 + 9; loop: 3 s; connect: 9 + a 4n - 1 transition + 9; edit: the
    # clip's 9; generate --loop: 2 s at 8 fps (one frame fewer than the 17 it makes)
    assert [probe(p).num_frames for p in paths] == [9, 25, 17, 24, 25, 9, 16]
    assert all((probe(p).width, probe(p).height, probe(p).fps) == (48, 32, 8.0) for p in paths)

    source = read_video(clip)[0].astype(int)
    frames = [read_video(p)[0].astype(int) for p in paths]
    assert np.abs(frames[0][0] - moving_square(1)[0]).mean() < 2  # image-to-video starts on the image
    assert np.abs(frames[1][:9] - source).mean() < 2  # extend keeps the clip as it was (H.264 twice)
    assert np.abs(frames[2][-9:] - source).mean() < 2  # backward: the clip comes last
    assert np.abs(frames[3][:9] - source).mean() < 2 and np.abs(frames[4][-9:] - source).mean() < 2

    recs = records(out)
    assert [(r["line"], r["status"], r["path"]) for r in recs] == [(n, "ok", p.name) for n, p in enumerate(paths, 1)]
    assert [r["operation"] for r in recs] == ["generate", "extend", "extend", "loop", "connect", "edit", "generate"]
    assert recs[0]["image"] == "first.png" and recs[2]["backward"] and recs[5]["strength"] == 0.5
    assert recs[6]["loop"] and all(r["seed"] == 1 for r in recs)

    code, stdout, _ = call_sora(capsys, *args)  # done: nothing is rendered again
    assert (code, stdout, len(records(out))) == (0, "", 7)


def test_batch_items_are_the_files_the_commands_write(window_17, tmp_path, capsys):
    write_inputs(tmp_path)
    lines = [dict(prompt=PROMPT, frames=33, out="long.mp4"),  # two windows and more, chained
             dict(prompt=PROMPT, image="first.png", loop=True, fit="pad", out="image.mp4"),
             dict(mode="extend", video="in.mp4", seconds=1, prompt=PROMPT, out="extend.mp4")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    common = ["--model", str(window_17), "--steps", "2", "--seed", "5", "--quiet"]
    code, _, err = call_sora(capsys, "batch", str(tmp_path / "p.jsonl"), "--out-dir", str(tmp_path / "batch"),
                             *common)
    assert code == 0, err
    single = tmp_path / "single"
    for command in (["generate", PROMPT, "--frames", "33", "--out", str(single / "long.mp4")],
                    ["generate", PROMPT, "--image", str(tmp_path / "first.png"), "--loop", "--fit", "pad",
                     "--out", str(single / "image.mp4")],
                    ["extend", str(tmp_path / "in.mp4"), "--seconds", "1", "--prompt", PROMPT,
                     "--out", str(single / "extend.mp4")]):
        code, _, err = call_sora(capsys, *command, *common)
        assert code == 0, err
    for name in ("long.mp4", "image.mp4", "extend.mp4"):
        assert np.array_equal(read_video(tmp_path / "batch" / name)[0], read_video(single / name)[0]), name
        assert read_metadata(tmp_path / "batch" / name) == read_metadata(single / name), name


def test_stdin_is_read_and_sniffed(tiny_wan_dir, tmp_path, capsys, monkeypatch):
    import io

    out = tmp_path / "out"
    piped = b'# jsonl from a pipe\n{"prompt": "fox", "seed": 3}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
    code, stdout, err = call_sora(capsys, "batch", "-", "--out-dir", str(out), *fast(tiny_wan_dir))
    assert code == 0, err
    assert stdout.splitlines() == [str(out / "0002_3_fox.mp4")]


def test_a_warning_shared_by_the_items_is_shown_once(tiny_wan_dir, tmp_path, capsys):
    file = tmp_path / "p.txt"
    file.write_text("a red fox\nblue ball\ngreen star\n")
    args = ["--model", str(tiny_wan_dir), "--steps", "1", "--frames", "6", "--quiet"]
    for size in ("1", "3"):  # one by one, and denoised together
        code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(tmp_path / size), "--batch-size", size,
                                 *args)
        assert code == 0, err
        assert err.count("frame count 6 is not 4n+1; using 5") == 1, err
        assert [probe(tmp_path / size / p).num_frames for p in videos(tmp_path / size)] == [5, 5, 5]


class Writes:
    """A stdout that keeps each write call apart, as an unbuffered pipe shared with other processes sees them."""

    def __init__(self):
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("json_out", [False, True])
def test_each_result_line_is_one_write(tiny_wan_dir, tmp_path, capsys, monkeypatch, json_out):
    # torchrun's ranks share one stdout pipe: a line written in two parts (print writes the newline apart when
    # unbuffered) let another rank's path land in between, "a.mp4b.mp4\n\n"
    file = tmp_path / "p.txt"
    file.write_text("a red fox\nblue ball\n")
    writes = Writes()
    monkeypatch.setattr(sys, "stdout", writes)
    code, _, err = call_sora(capsys, "batch", str(file), "--out-dir", str(tmp_path / "out"),
                             *fast(tiny_wan_dir), *(["--json"] if json_out else []))
    assert code == 0, err
    assert len(writes.calls) == 2 and all(c.endswith("\n") and c.count("\n") == 1 for c in writes.calls), writes.calls


def test_render_record_and_resume(tiny_wan_dir, tmp_path, capsys):
    file, out = tmp_path / "p.txt", tmp_path / "out"
    file.write_text("a red fox\nblue ball\n# skipped\ngreen star\n")
    args = ["batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir, "--seed", "7")]
    code, stdout, err = call_sora(capsys, *args)
    assert code == 0, err
    names = ["0001_7_a-red-fox.mp4", "0002_7_blue-ball.mp4", "0004_7_green-star.mp4"]
    assert stdout.splitlines() == [str(out / n) for n in names]
    assert videos(out) == names
    recs = records(out)
    assert [(r["line"], r["prompt"], r["seed"], r["path"], r["status"], r["error"]) for r in recs] == [
        (1, "a red fox", 7, names[0], "ok", None), (2, "blue ball", 7, names[1], "ok", None),
        (4, "green star", 7, names[2], "ok", None)]
    assert all(r["steps"] == 1 and r["num_frames"] == 5 and r["width"] == 48 and r["elapsed"] >= 0 for r in recs)
    assert read_metadata(out / names[0])["seed"] == 7

    # The same settings give the same video as `sora generate`: both go through one request module.
    single = tmp_path / "single.mp4"
    code, _, err = call_sora(capsys, "generate", "a red fox", "--out", str(single), *fast(tiny_wan_dir, "--seed", "7"))
    assert code == 0, err
    assert np.array_equal(read_video(single)[0], read_video(out / names[0])[0])

    # Rerun: nothing to do. A deleted output is rendered again; --force renders everything again.
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}
    code, stdout, _ = call_sora(capsys, *args)
    assert (code, stdout, len(records(out))) == (0, "", 3)
    assert {n: (out / n).stat().st_mtime_ns for n in names} == stamps
    (out / names[1]).unlink()
    code, stdout, _ = call_sora(capsys, *args, "--json")
    assert code == 0 and [json.loads(x)["path"] for x in stdout.splitlines()] == [str(out / names[1])]
    assert len(records(out)) == 4
    code, stdout, _ = call_sora(capsys, *args, "--force")
    assert code == 0 and len(stdout.splitlines()) == 3 and len(records(out)) == 7 and videos(out) == names


def test_a_failing_item_is_recorded_and_the_rest_rendered(tiny_wan_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocked").write_text("a file where a folder is needed")
    (tmp_path / "clip.mp4").write_bytes(b"")
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "one"}\n{"prompt": "two", "out": "blocked/two.mp4"}\n'
                    '{"mode": "loop", "video": "clip.mp4", "seconds": 0.5}\n{"prompt": "four"}\n')
    args = ["batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir)]
    code, stdout, err = call_sora(capsys, *args)
    assert code == 3
    assert [Path(p).name for p in stdout.splitlines()] == [n for n in videos(out)]
    assert len(stdout.splitlines()) == 2
    assert f"{file}:2: " in err and f"{file}:3: cannot read {tmp_path / 'clip.mp4'}" in err
    status = {r["line"]: (r["status"], r["error"]) for r in records(out)}
    assert status[1] == status[4] == ("ok", None)
    assert status[2][0] == status[3][0] == "failed" and status[2][1] and "cannot read" in status[3][1]
    # what the line asked for, its seconds not confused with the time taken
    assert [(r["mode"], r["seconds"]) for r in records(out) if r["line"] == 3] == [("loop", 0.5)]
    # Once the cause is gone, a rerun renders only what failed.
    (out / "blocked").unlink()
    code, stdout, _ = call_sora(capsys, *args)
    assert code == 3 and stdout.splitlines() == [str(out / "blocked" / "two.mp4")]
    assert sum(r["status"] == "ok" for r in records(out)) == 3


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_interrupted_batch_leaves_no_partial_file_and_resumes(tiny_wan_dir, tmp_path, capsys, monkeypatch, stop):
    from sora_cli.cli import batch as cli_batch

    file, out = tmp_path / "p.txt", tmp_path / "out"
    file.write_text("one\ntwo\nthree\n")
    args = ["batch", str(file), "--out-dir", str(out), *fast(tiny_wan_dir)]
    real_bars = cli_batch.Bars

    class Unhandled(Exception):
        pass

    def unhandled(signum, frame):  # what SIGTERM does if the command does not handle it
        raise Unhandled

    class StopInSecondDecode(real_bars):
        def __call__(self, stage, done, total):
            super().__call__(stage, done, total)
            if stage == "items" and done == 1:
                self.armed = True
            if stage == "decode" and getattr(self, "armed", False):
                if stop == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)  # the signal arrives before this ends
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_batch, "Bars", StopInSecondDecode)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        code, stdout, err = call_sora(capsys, *args)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command puts the previous handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (code, err.strip().splitlines()[-1]) == ((130, "interrupted") if stop == "ctrl-c" else
                                                    (143, "stopped by SIGTERM"))
    assert len(videos(out)) == 1 and len(records(out)) == 1
    assert sorted(p.name for p in out.iterdir()) == finished_folder(out), "no partial files"

    monkeypatch.setattr(cli_batch, "Bars", real_bars)
    code, stdout, _ = call_sora(capsys, *args)
    assert code == 0 and len(stdout.splitlines()) == 2 and len(videos(out)) == 3 and len(records(out)) == 3


@pytest.mark.parametrize("batch_size", [1, 4])
def test_sigkill_mid_batch_then_rerun_renders_each_item_once(window_17, tmp_path, batch_size):
    file, out = tmp_path / "p.txt", tmp_path / "out"
    file.write_text("".join(f"prompt number {i}\n" for i in range(6)))
    # 17 frames: one window of this model (as of `sora generate`, more would be chained windows); with
    # --batch-size 4 the first four items are denoised together and written one by one
    args = [sys.executable, "-m", "sora_cli", "batch", str(file), "--out-dir", str(out), "--model", str(window_17),
            "--steps", "4", "--frames", "17", "--size", "64x64", "--batch-size", str(batch_size), "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not videos(out) and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    first = videos(out)
    assert 1 <= len(first) < 6, "the kill must land mid-batch"
    recorded = {r["path"] for r in manifest.read(out)}

    # The rerun prints on stdout exactly what it rendered, even with a terminal for the progress bars on stderr.
    result = subprocess.run(args[:-1], env=dict(env, TTY_COMPATIBLE="1"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(videos(out)) == 6
    oks = [r["path"] for r in records(out) if r["status"] == "ok"]
    assert sorted(oks) == videos(out), "each item is recorded as rendered exactly once"
    assert sorted(Path(p).name for p in result.stdout.splitlines()) == sorted(set(videos(out)) - recorded)


def test_manifest_appends_whole_lines_and_merges_once(tmp_path):
    main = tmp_path / manifest.MANIFEST
    main.write_text('{"path": "a.mp4", "status": "ok"}\n{"path": "torn')  # a crash mid-line
    manifest.append(main, {"path": "b.mp4", "status": "ok"})
    manifest.append(manifest.part_path(tmp_path, 1), {"path": "c.mp4", "status": "ok"})
    manifest.append(manifest.part_path(tmp_path, 0), {"path": "d.mp4", "status": "failed"})
    assert [r["path"] for r in manifest.read(tmp_path)] == ["a.mp4", "b.mp4", "d.mp4", "c.mp4"]
    # A merge cut short after appending, before removing its rank file, is simply repeated.
    (tmp_path / "copy").write_bytes(manifest.part_path(tmp_path, 1).read_bytes())
    manifest.merge_parts(tmp_path)
    (tmp_path / "copy").rename(manifest.part_path(tmp_path, 1))
    manifest.merge_parts(tmp_path)
    assert [r["path"] for r in manifest.read(tmp_path)] == ["a.mp4", "b.mp4", "d.mp4", "c.mp4"]
    assert not list(tmp_path.glob("manifest.rank*")) and main.read_text().endswith("\n")


def test_two_torchrun_ranks_render_what_one_rank_renders(tiny_wan_dir, tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "a red fox"}\n{"prompt": "blue ball", "seed": 4}\n# note\n'
                    '{"prompt": "green star", "steps": 1}\n{"prompt": "pink cube", "out": "pink.mp4"}\n')
    # with --batch-size 2 each line's two repeats are denoised together: ranks share out whole groups
    options = ["--model", str(tiny_wan_dir), "--steps", "2", "--frames", "5", "--repeat", "2", "--batch-size", "2",
               "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [subprocess.Popen([sys.executable, "-m", "sora_cli", "batch", str(file), "--out-dir", str(one), *options],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "sora_cli", "batch", str(file), "--out-dir", str(two), *options],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    results = [(p.communicate(), p.returncode) for p in procs]
    results = [(code, out, err) for (out, err), code in results]
    for code, _, err in results:
        assert code == 0, err
    assert sorted(results[1][1].split()) == sorted(str(two / n) for n in videos(two))  # every path, once
    assert len(videos(one)) == 8 and videos(two) == videos(one)
    for name in videos(one):
        assert np.array_equal(read_video(one / name)[0], read_video(two / name)[0]), name
    key = ("line", "prompt", "seed", "path", "status", "width", "num_frames", "steps")
    summary = [sorted(tuple(r[k] for k in key) for r in records(d)) for d in (one, two)]
    assert summary[0] == summary[1]
    assert [p.name for p in two.glob("manifest*")] == ["manifest.jsonl"]  # the rank files were merged


def test_run_sora_batch_help():
    result = run_sora("batch", "--help")
    assert result.returncode == 0 and "--out-dir" in result.stdout and "--dry-run" in result.stdout


def test_examples_are_valid(tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples"
    for name in ("prompts.txt", "prompts.jsonl"):
        batch = read_batch(str(examples / name), tmp_path)
        assert batch.errors == [] and len(batch.items) >= 5, name
    assert any(item.request.image for item in read_batch(str(examples / "prompts.jsonl"), tmp_path).items)
    assert subprocess.run(["bash", "-n", str(examples / "render.sh")]).returncode == 0
