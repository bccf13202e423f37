"""Every bad input, tried as a new user and a hostile one would: one short `error:` message naming the problem,
a non-zero exit code, no traceback, no warning, and no file left behind (nor an empty folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from test_cli import call_sora

# (arguments, a word the message must contain). "{model}" is the tiny Wan folder; the other files named here
# are made by `workspace`. The message must name the problem, so a case cannot pass by failing for some other
# reason (an input that happens to be unreadable, say).
GENERATE = [
    (["--seconds", "nan"], "--seconds nan"),
    (["--seconds", "inf"], "--seconds inf"),
    (["--seconds", "1e400"], "--seconds inf"),
    (["--seconds", "-1"], "--seconds -1"),
    (["--seconds", "0"], "--seconds 0"),
    (["--seconds", "601"], "--seconds 601"),
    (["--seconds", "600", "--fps", "120"], "72001 frames"),
    (["--shift", "nan"], "--shift nan"),
    (["--shift", "inf"], "--shift inf"),
    (["--shift", "0"], "--shift 0"),
    (["--guidance", "nan"], "--guidance nan"),
    (["--guidance", "inf"], "--guidance inf"),
    (["--guidance", "-1"], "--guidance -1"),
    (["--guidance", "1e400"], "--guidance inf"),
    (["--guidance-2", "nan"], "--guidance-2 nan"),
    (["--steps", "0"], "--steps 0"),
    (["--steps", "1001"], "--steps 1001"),
    (["--steps", "many"], "--steps"),
    (["--frames", "0"], "--frames 0"),
    (["--frames", "100001"], "--frames 100001"),
    (["--frames", "9", "--seconds", "2"], "--seconds"),
    (["--fps", "0"], "--fps 0"),
    (["--fps", "1000000000"], "--fps 1000000000"),
    (["--fps", "121"], "--fps 121"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2**63)], "--seed"),
    (["--passes", "3"], "--passes 3"),
    (["--size", "100000x100000"], "100000 pixels"),
    (["--size", "0x64"], "--size"),
    (["--size", "4112x64"], "4112 pixels"),
    (["--negative", "\udcff"], "byte 0xff"),
    (["--size", "big"], "--size"),
    (["--resolution", "100000p"], "100000 pixels"),
    # the size is known once the model is; the folder --out names is made only when the video is written
    (["--aspect", "5:1", "--resolution", "4096p", "--out", "new/dir/x.mp4"], "20480 pixels"),
    (["--aspect", "0:1"], "--aspect"),
    (["--aspect", "100:1"], "--aspect"),
    (["--sampler", "ddim"], "--sampler"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--metadata", "xml"], "--metadata"),
    (["--fit", "zoom"], "--fit"),
    (["--image", "missing.png"], "missing.png"),
    (["--image", "notes.txt"], "notes.txt"),
    (["--image", "/dev/zero"], "not a file"),
    (["--image", "."], "not a file"),
    (["--negative", "x" * 10_001], "10001 characters"),
    (["--out", "clip.avi"], "--out"),
    (["--out", "missing-dir"], "--out"),
    (["--out", "notes.txt/x.mp4"], "notes.txt"),
    (["--out", "taken.mp4"], "--overwrite"),
]
PROMPTS = [
    ("", "prompt is empty"),
    ("   ", "prompt is empty"),
    ("red \udcff\udcfe circle", "byte 0xff"),  # what Python makes of the bytes $'red \xff\xfe circle'
]
EDITING = [
    (["extend", "clip.mp4", "--seconds", "inf"], "--seconds inf"),
    (["extend", "clip.mp4", "--seconds", "nan"], "--seconds nan"),
    (["extend", "clip.mp4", "--seconds", "0"], "--seconds 0"),
    (["extend", "clip.mp4", "--seconds", "1e12"], "--seconds"),
    (["loop", "clip.mp4", "--duration", "inf"], "--duration inf"),
    (["loop", "clip.mp4", "--duration", "1e12"], "--duration"),
    (["loop", "clip.mp4", "--seconds", "nan"], "--seconds nan"),
    (["connect", "clip.mp4", "clip.mp4", "--seconds", "inf"], "--seconds inf"),
    (["edit", "clip.mp4", "--prompt", "x", "--strength", "nan"], "--strength nan"),
    (["edit", "clip.mp4", "--prompt", "x", "--strength", "0"], "--strength 0"),
    (["edit", "clip.mp4", "--prompt", "x", "--strength", "1.5"], "--strength 1.5"),
    (["edit", "clip.mp4", "--prompt", "  "], "--prompt is empty"),
    (["extend", "clip.mp4", "--prompt", ""], "--prompt is empty"),
    (["extend", "clip.mp4", "--prompt", "\udcff"], "byte 0xff"),
    (["extend", "notes.txt"], "notes.txt"),
    (["extend", "empty.mp4"], "empty.mp4"),
    (["extend", "missing.mp4"], "missing.mp4"),
    (["connect", "clip.mp4", "missing.mp4"], "missing.mp4"),
    (["extend", "clip.mp4", "--steps", "0"], "--steps 0"),
]
LINES = [  # one bad line of a jsonl prompt file
    ('{"prompt": "x", "seconds": NaN}', "NaN"),
    ('{"prompt": "x", "seconds": 1e400}', "--seconds inf"),
    ('{"prompt": "x", "shift": NaN}', "NaN"),
    ('{"prompt": "x", "guidance": Infinity}', "Infinity"),
    ('{"prompt": "x", "guidance": -Infinity}', "Infinity"),
    ('{"prompt": "x", "guidance_2": -1}', "--guidance-2 -1"),
    ('{"prompt": "x", "frames": 100001}', "--frames 100001"),
    ('{"prompt": "x", "fps": 0}', "--fps 0"),
    ('{"prompt": "x", "size": "100000x100000"}', "100000 pixels"),
    ('{"prompt": "x", "resolution": 100000}', "100000 pixels"),
    ('{"prompt": "x", "seed": -1}', "--seed -1"),
    ('{"prompt": "x", "passes": 3}', "--passes 3"),
    ('{"prompt": "x", "steps": 1.5}', "'steps'"),
    ('{"prompt": "x", "repeat": 0}', "--repeat 0"),
    ('{"prompt": "x", "repeat": 100000}', "--repeat 100000"),
    ('{"prompt": ""}', "prompt is empty"),
    ('{"prompt": "' + "x " * 5001 + '"}', "characters"),
    ('{"prompt": "\\udcff"}', "byte 0xff"),
    ('{"prompt": "x", "negative": "\\udcff"}', "byte 0xff"),
    ('{"prompt": "x", "out": "../x.mp4"}', "'out'"),
    ('{"prompt": "x", "out": "/etc/x.mp4"}', "'out'"),
    ('{"mode": "extend", "video": "clip.mp4", "seconds": 1e400}', "--seconds inf"),
    ('{"mode": "loop", "video": "clip.mp4", "duration": 1e12}', "--duration"),
    ('{"mode": "extend", "video": "clip.mp4", "prompt": ""}', "prompt is empty"),
    ('{"mode": "edit", "video": "clip.mp4", "prompt": "x", "strength": NaN}', "NaN"),
    ('[1, 2]', "JSON object"),
]
BATCH = [
    (["--repeat", "0"], "--repeat 0"),
    (["--seconds", "nan"], "--seconds nan"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--fps", "0"], "--fps 0"),
    (["--guidance", "nan"], "--guidance nan"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_wan_dir):
    """A fresh current folder with the inputs the cases name; returns a function that lists what is in it."""
    from test_editing import moving_square

    from sora_cli.mp4 import write_mp4

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "taken.mp4").write_bytes(b"precious")
    write_mp4(moving_square(5, 48, 32), tmp_path / "clip.mp4", fps=8)
    before = listing(tmp_path)
    yield lambda: listing(tmp_path) - before


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def check_refused(capsys, args: list[str], needle: str, new_files, code: int = 2) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, out, err = call_sora(capsys, *args)
    lines = err.strip().splitlines()
    assert got == code, err
    assert needle in err, err
    assert lines and lines[0].startswith("error: ") and len(lines) <= 4, err
    assert "Traceback" not in err and not [str(w.message) for w in caught]
    assert out == "" and new_files() == set(), "no file or folder is left behind"


@pytest.mark.parametrize("args,needle", GENERATE, ids=[" ".join(a)[:60] for a, _ in GENERATE])
def test_generate_refuses(capsys, workspace, tiny_wan_dir, args, needle):
    check_refused(capsys, ["generate", "fox", "--model", str(tiny_wan_dir), "--quiet", *args], needle, workspace)


@pytest.mark.parametrize("prompt,needle", PROMPTS, ids=["empty", "blank", "not-utf8"])
def test_generate_refuses_prompt(capsys, workspace, tiny_wan_dir, prompt, needle):
    check_refused(capsys, ["generate", prompt, "--model", str(tiny_wan_dir), "--quiet"], needle, workspace)


@pytest.mark.parametrize("args,needle", EDITING, ids=[" ".join(a) for a, _ in EDITING])
def test_editing_refuses(capsys, workspace, tiny_wan_dir, args, needle):
    check_refused(capsys, [*args, "--model", str(tiny_wan_dir), "--quiet"], needle, workspace)


@pytest.mark.parametrize("line,needle", LINES, ids=[line[:60] for line, _ in LINES])
def test_batch_refuses_line(capsys, workspace, tiny_wan_dir, line, needle):
    Path("p.jsonl").write_text('{"prompt": "a good line"}\n' + line + "\n")
    check_refused(capsys, ["batch", "p.jsonl", "--out-dir", "out", "--model", str(tiny_wan_dir), "--quiet"],
                  needle, lambda: workspace() - {"p.jsonl"})


@pytest.mark.parametrize("args,needle", BATCH, ids=[" ".join(a) for a, _ in BATCH])
def test_batch_refuses_option(capsys, workspace, tiny_wan_dir, args, needle):
    Path("p.txt").write_text("a red fox\n")
    check_refused(capsys, ["batch", "p.txt", "--out-dir", "out", "--model", str(tiny_wan_dir), "--quiet", *args],
                  needle, lambda: workspace() - {"p.txt"})


def test_batch_refuses_unreadable_files(capsys, workspace, tiny_wan_dir):
    Path("latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for name, needle in (("missing.txt", "missing.txt"), ("latin1.txt", "not UTF-8"), ("/dev/zero", "not a file"),
                         (".", "not a file")):
        check_refused(capsys, ["batch", name, "--out-dir", "out", "--model", str(tiny_wan_dir), "--quiet"],
                      needle, lambda: workspace() - {"latin1.txt"})


@pytest.mark.parametrize("model,needle", [("foo/bar baz", "foo/bar baz"), ("nowhere", "nowhere")])
def test_unknown_models_are_named(capsys, workspace, model, needle):
    check_refused(capsys, ["generate", "fox", "--model", model, "--offline", "--quiet"], needle, workspace, code=1)


@pytest.mark.parametrize("damage,needle", [(lambda index: [], "model_index.json"),
                                           (lambda index: index | {"_sora": {"width": "abc"}}, "width"),
                                           (lambda index: index | {"_sora": {"fps": -8}}, "fps")],
                         ids=["not-an-object", "width-text", "fps-negative"])
def test_hostile_model_index(capsys, workspace, tiny_wan_dir, tmp_path_factory, damage, needle):
    import shutil

    folder = tmp_path_factory.mktemp("hostile") / "model"
    shutil.copytree(tiny_wan_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(damage(index)))
    check_refused(capsys, ["generate", "fox", "--model", str(folder), "--quiet"], needle, workspace, code=1)


def test_prompt_bytes_that_are_not_utf8_from_a_shell(tmp_path, tiny_wan_dir):
    """The real entry point, given the raw bytes a shell passes on."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = [sys.executable.encode(), b"-m", b"sora_cli", b"generate", b"red \xff\xfe circle", b"--model",
            bytes(tiny_wan_dir), b"--quiet"]
    result = subprocess.run(args, capture_output=True, cwd=tmp_path, env=env)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and err.startswith("error: ") and "byte 0xff" in err, err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []



@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you "
                                                                "tried to allocate 214748364800 bytes."),
                                   RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")])
def test_out_of_memory_is_one_line(capsys, workspace, tiny_wan_dir, monkeypatch, error):
    from sora_cli import pipeline

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained", exhausted)
    check_refused(capsys, ["generate", "fox", "--model", str(tiny_wan_dir)], "out of memory", workspace, code=1)


def test_debug_shows_the_traceback_and_a_bug_always_does(capsys, workspace, tiny_wan_dir, monkeypatch):
    from sora_cli import pipeline

    code, _, err = call_sora(capsys, "--debug", "generate", "", "--model", str(tiny_wan_dir))
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained", bug)
    with pytest.raises(ZeroDivisionError):  # not dressed up as a user's error: the interpreter prints it
        call_sora(capsys, "generate", "fox", "--model", str(tiny_wan_dir))
