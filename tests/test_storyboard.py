"""Storyboards: shots read and checked, windows that never straddle a shot change, each window made from its own
shot's prompt, and whole storyboards through the library (sora-tiny: each shot's middle frame shows its prompt's
colour; the first shot equals a plain render), the CLI and batch lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sora_cli import Pipeline, chain, editing, storyboard
from sora_cli.errors import OptionError
from sora_cli.settings import check, of_command
from sora_cli.shots import MAX_SHOTS, Shot
from sora_cli.tiny import judge
from sora_cli.video import probe, read_metadata, read_video
from test_cli import call_sora
from test_editing import run_fake

RED, BLUE, GREEN = (f"a {c} circle on a black background" for c in ("red", "blue", "green"))


def parse_storyboard(value):
    """--storyboard's value as the settings table reads it."""
    return check(of_command("generate")["storyboard"], value)


def write(tmp_path, value, name="shots.json"):
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


# ------------------------------------------------------------------------------------------- reading shots

def test_a_storyboard_file_is_read(tmp_path):
    shots = [{"prompt": "a fox walks", "seconds": 3}, {"prompt": "it runs", "seconds": 1.5, "cut": True}]
    assert parse_storyboard(write(tmp_path, shots)) == (Shot("a fox walks", 3.0), Shot("it runs", 1.5, True))
    assert parse_storyboard(write(tmp_path, {"shots": shots})) == parse_storyboard(shots)  # a batch line's list


@pytest.mark.parametrize("value, message", [
    ([], "non-empty list"),
    ({"scenes": []}, "non-empty list"),
    (["a fox"], "shot 1 is not a"),
    ([{"prompt": "a fox"}], "shot 1: 'seconds' must be a number above 0"),
    ([{"prompt": "a fox", "seconds": 0}], "above 0"),
    ([{"prompt": "a fox", "seconds": "2"}], "above 0"),
    ([{"prompt": "a fox", "seconds": True}], "above 0"),
    ([{"prompt": "a fox", "seconds": 1}, {"prompt": "  ", "seconds": 1}], "shot 2's prompt is empty"),
    ([{"prompt": "a fox", "seconds": 1, "camera": "pan"}], "unknown key 'camera'"),
    ([{"prompt": "a fox", "seconds": 1, "cut": "yes"}], "'cut' must be true or false"),
    ([{"prompt": "a fox", "seconds": 400}, {"prompt": "a fox", "seconds": 400}], "at most 600 s"),
    ([{"prompt": "a fox", "seconds": 1}] * (MAX_SHOTS + 1), f"at most {MAX_SHOTS}"),
])
def test_bad_storyboards_are_refused(value, message):
    with pytest.raises(OptionError, match=message):
        parse_storyboard(value)


def test_bad_storyboard_files_are_refused(tmp_path):
    with pytest.raises(OptionError, match="no such file"):
        parse_storyboard(str(tmp_path / "missing.json"))
    with pytest.raises(OptionError, match="not JSON text"):
        parse_storyboard(write(tmp_path, "[{'prompt': 'single quotes'}]"))
    with pytest.raises(OptionError, match="over 1 MB"):
        parse_storyboard(write(tmp_path, " " * (1 << 20) + "[]"))


# ------------------------------------------------------------------------------------------- windows

@pytest.mark.parametrize("plan", [chain.Plan(13, 5, 2, cuts=(5, 9)), chain.Plan(22, 5, 2, cuts=(3, 4, 10)),
                                  chain.Plan(61, 21, 5, cuts=(16, 31)), chain.Plan(6, 21, 5, cuts=(3,)),
                                  chain.Plan(20, 5, 2, head=torch.zeros(1, 2, 2, 1, 1), cuts=(4, 12))])
def test_no_window_makes_frames_on_both_sides_of_a_cut(plan):
    spans = chain.windows(plan)
    made = plan.head_len
    for s, e in spans:
        new = range(max(made, s + (s > 0)), e)  # what earlier windows did not make
        assert len(new) and e - s <= plan.window
        assert not any(new[0] < c <= new[-1] for c in plan.cuts), (s, e)
        made = e
    assert made == plan.length


def test_each_shot_is_anchored_to_its_own_colours():
    plan = chain.Plan(13, 5, 2, cuts=(7,), anchor=True)
    assert chain.windows(plan) == [(0, 5), (2, 7), (4, 9), (6, 11), (8, 13)]
    _, latents = run_fake(plan, drift=0.5)  # window w makes latents at level 1.5 w
    level = latents[0, 0, :, 0, 0]
    # shot 1 is held to its first window's level; shot 2 to the level of its own first frames (window 3), not to
    # shot 1's, which it carries in
    assert torch.allclose(level[[4, 6]], torch.tensor([1.5, 1.5]))
    assert torch.allclose(level[[7, 8]], torch.tensor([4.5, 4.5])) and torch.allclose(level[[10, 12]], torch.tensor(
        [4.5, 4.5]))


def test_cuts_need_a_forward_plan_without_a_known_end():
    with pytest.raises(ValueError, match="forward plan"):
        chain.windows(chain.Plan(13, 5, 2, tail=torch.zeros(1, 2, 1, 1, 1), cuts=(5,)))
    with pytest.raises(ValueError, match="forward plan"):
        chain.windows(chain.Plan(13, 5, 2, cuts=(13,)))


# ------------------------------------------------------------------------------------------- whole storyboards

@pytest.fixture(scope="module")
def tiny():
    return Pipeline.from_pretrained(None, device="cpu")


def test_each_window_is_made_from_its_own_shots_prompt(tiny, monkeypatch):
    shots = (Shot(RED, 3), Shot(BLUE, 2), Shot(GREEN, 1, cut=True))
    given = []
    denoise = tiny.denoise
    monkeypatch.setattr(tiny, "denoise", lambda job, context, *a, **k: given.append(context) or
                        denoise(job, context, *a, **k))
    made = storyboard.make(tiny, shots, seed=1, num_steps=2)
    frames = np.concatenate(list(made.chunks))
    job = tiny.resolve(RED, seed=1, num_steps=2)
    red, blue, green = (tiny.encode_prompt(job.__class__(**{**job.__dict__, "prompt": p})) for p in (RED, BLUE, GREEN))
    # 8 fps, 4 frames a latent: 3 s -> 6 latents after the opening one, 2 s -> 4, 1 s -> 2 (a new sequence)
    plans = [chain.Plan(11, 5, 2, cuts=(7,)), chain.Plan(3, 5, 2)]
    expected = [red if e <= 7 else blue for _, e in chain.windows(plans[0])] + [green]
    assert len(given) == len(expected) and all(torch.equal(g, x) for g, x in zip(given, expected))
    assert [(s["first_frame"], s["frames"]) for s in made.metadata["storyboard"]] == [(0, 25), (25, 16), (41, 9)]
    assert frames.shape[0] == made.num_frames == 50


def test_shots_show_their_prompts_and_the_first_equals_a_plain_render(tiny):
    shots = (Shot(RED, 3), Shot(BLUE, 2), Shot(GREEN, 2))
    made = storyboard.make(tiny, shots, seed=3, num_steps=4)
    frames = np.concatenate(list(made.chunks))
    for shot, colour in zip(made.metadata["storyboard"], ("red", "blue", "green")):
        middle = shot["first_frame"] + shot["frames"] // 2
        assert judge.judge_clip(frames[middle:middle + 1], made.fps).color == colour, shot
    # the first shot's windows are those of a 3-second video of its prompt: the same noise, the same frames
    plain = np.concatenate(list(editing.generate(tiny, RED, seed=3, num_steps=4, num_frames=25).chunks))
    assert np.array_equal(plain, frames[:25])
    assert not np.array_equal(plain[-9:], frames[-9:])


def test_cli_storyboard_writes_one_video_of_the_summed_length(folders, tmp_path, capsys):
    shots = [{"prompt": "a fox walks", "seconds": 1.5}, {"prompt": "the fox runs", "seconds": 1},
             {"prompt": "a forest from above", "seconds": 1, "cut": True}]
    out = tmp_path / "story.mp4"
    code, stdout, err = call_sora(capsys, "generate", "--storyboard", write(tmp_path, shots), "--model",
                                  str(folders["replace"]), "--steps", "1", "--seed", "5", "--out", str(out),
                                  "--json", "--quiet")
    assert code == 0, err
    record = json.loads(stdout)
    # 8 fps: 12 frames -> 3 latents (+ the opening frame), 8 -> 2, 8 -> 2 (+ its own opening frame)
    assert [(s["first_frame"], s["frames"]) for s in record["storyboard"]] == [(0, 13), (13, 8), (21, 9)]
    assert probe(out).num_frames == record["num_frames"] == 30 == len(read_video(out)[0])
    meta = read_metadata(out)
    assert [s["prompt"] for s in meta["storyboard"]] == [s["prompt"] for s in shots]
    assert meta["storyboard"][2]["cut"] is True and meta["prompt"] == "a forest from above"


def test_cli_prompt_is_said_before_every_shot(folders, tmp_path, capsys):
    shots = [{"prompt": "a fox walks", "seconds": 1}, {"prompt": "the fox runs", "seconds": 1}]
    code, stdout, err = call_sora(capsys, "generate", "in watercolour,", "--storyboard", write(tmp_path, shots),
                                  "--model", str(folders["replace"]), "--steps", "1", "--out", str(tmp_path),
                                  "--json", "--quiet")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["prompt"] == "in watercolour, the fox runs" and "in-watercolour" in record["path"]


@pytest.mark.parametrize("extra, message", [
    (["--frames", "17"], "--storyboard cannot be combined with --frames"),
    (["--loop"], "--storyboard cannot be combined with --loop"),
    (["--seconds", "2"], "--storyboard cannot be combined with --seconds"),
    (["--out", "x.png"], "a storyboard makes a video; give an .mp4 name"),
])
def test_cli_refuses_what_a_storyboard_says_itself(tmp_path, capsys, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, [{"prompt": "a fox", "seconds": 1}])
    code, stdout, err = call_sora(capsys, "generate", "--storyboard", path, "--out", "x.mp4", *extra)
    assert code != 0 and err.strip().startswith("error:") and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("x.*"))


def test_cli_needs_a_prompt_or_a_storyboard(tmp_path, capsys):
    code, _, err = call_sora(capsys, "generate", "--out", str(tmp_path / "x.mp4"))
    assert code != 0 and "PROMPT argument is missing" in err and "Traceback" not in err
    code, _, err = call_sora(capsys, "generate", "--storyboard", write(tmp_path, [{"prompt": "", "seconds": 1}]))
    assert code != 0 and err.count("error:") == 1 and "shot 1's prompt is empty" in err


def test_batch_line_storyboard(folders, tmp_path, capsys):
    lines = [{"storyboard": [{"prompt": "a fox walks", "seconds": 1}, {"prompt": "the fox runs", "seconds": 1}],
              "seed": 2},
             {"storyboard": [{"prompt": "a fox", "seconds": -1}]},
             {"storyboard": "shots.json"}]
    path = tmp_path / "lines.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    code, _, err = call_sora(capsys, "batch", str(path), "--out-dir", str(tmp_path / "out"), "--model",
                             str(folders["replace"]), "--steps", "1", "--quiet")
    assert code != 0
    assert "lines.jsonl:2: --storyboard: shot 1: 'seconds' must be a number above 0" in err
    assert "lines.jsonl:3: 'storyboard' must be a list" in err
    path.write_text(json.dumps(lines[0]) + "\n")
    code, _, err = call_sora(capsys, "batch", str(path), "--out-dir", str(tmp_path / "out"), "--model",
                             str(folders["replace"]), "--steps", "1", "--quiet")
    assert code == 0, err
    (video,) = (tmp_path / "out").glob("*.mp4")
    assert video.name.startswith("0001_2_a-fox-walks")
    meta = read_metadata(video)
    assert [s["prompt"] for s in meta["storyboard"]] == ["a fox walks", "the fox runs"]
    assert probe(video).num_frames == 17
