"""Editing features: windows over long latent clips, then each feature end to end, in the library (exact frames)
and through the CLI on small clips written with write_mp4 (counts, fps, kept frames, clean errors)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sora_cli import Pipeline, chain, editing
from sora_cli.clips import Clip, fit_frames, resample
from sora_cli.conditioning import CLEAN_TOKENS, REPLACE
from sora_cli.errors import OptionError
from sora_cli.mp4 import write_mp4
from sora_cli.tiny import judge
from sora_cli.video import probe, read_metadata, read_video
from test_cli import call_sora

PROMPT = "a red fox running through snow"
FAST = dict(num_steps=2, guidance_scale=1.0)


# ------------------------------------------------------------------------- windows, with a stand-in model

class FakePipe:
    """Generates, for window w (from 1), latents equal to w + drift * w; records what each window was given."""

    device = torch.device("cpu")

    def __init__(self, drift: float = 0.0):
        self.known, self.drift, self.events = [], drift, []

    def draw_noise(self, job, generator, frames):
        return torch.randn((1, 2, frames, 1, 1), generator=generator)

    def denoise(self, job, context, noise, known, strength, on_step):
        self.known.append(known)
        self.events.append("denoise")
        w = len(self.known)
        made = torch.full_like(noise, w * (1 + self.drift))
        return torch.where(known.mask[None, None, :, None, None], known.latents, made)


class OddFirstFrame(FakePipe):
    """As FakePipe, but a window's first frame, a lone video frame's latent, sits at another level."""

    def denoise(self, job, context, noise, known, strength, on_step):
        made = super().denoise(job, context, noise, known, strength, on_step)
        return torch.cat([made[:, :, :1] if known.mask[0] else torch.full_like(made[:, :, :1], 50.0), made[:, :, 1:]], 2)


def run_fake(plan, drift=0.0, fake=FakePipe):
    pipe = fake(drift)
    out = []
    for latent in chain.run(pipe, SimpleNamespace(num_steps=2), None, plan, torch.Generator().manual_seed(0)):
        pipe.events.append("yield")
        out.append(latent)
    return pipe, torch.cat(out, dim=2)


HEAD = torch.full((1, 2, 2, 1, 1), -1.0)
TAIL = torch.full((1, 2, 1, 1, 1), -2.0)


@pytest.mark.parametrize("plan", [
    chain.Plan(5, 5, 2), chain.Plan(121, 5, 2), chain.Plan(241, 21, 5),
    chain.Plan(6, 5, 2, head=HEAD), chain.Plan(30, 5, 2, head=HEAD, anchor=True),
    chain.Plan(9, 5, 2, head=HEAD, tail=TAIL), chain.Plan(6, 5, 2, loop_tail=1), chain.Plan(40, 5, 2, loop_tail=1),
    chain.Plan(7, 5, 2, tail=TAIL, backward=True), chain.Plan(30, 5, 2, tail=TAIL, backward=True),
])
def test_windows_are_bounded_and_make_every_frame_once(plan):
    spans = chain.windows(plan)
    assert all(0 <= s < e <= plan.length and e - s <= plan.window for s, e in spans)
    pipe, latents = run_fake(plan)
    assert latents.shape[2] == plan.length and (latents > -3).all()
    assert len(pipe.known) == len(spans)
    for w, ((s, e), known) in enumerate(zip(spans, pipe.known)):
        assert known.latents.shape[2] == e - s <= plan.window
        if w:  # every later window sees at least `overlap` frames made before it
            assert int(known.mask.sum()) >= plan.overlap
    a, b = plan.head_len, plan.tail_len
    assert (latents[:, :, :a] == -1).all() and (latents[:, :, a:plan.length - b] > 0).all()
    if plan.tail is not None:
        assert (latents[:, :, -b:] == -2).all()


def test_windows_carry_latents_not_pixels():
    plan = chain.Plan(12, 5, 2)
    pipe, latents = run_fake(plan)
    assert chain.windows(plan) == [(0, 5), (2, 7), (4, 9), (6, 11), (7, 12)]
    for (s, _), known in zip(chain.windows(plan)[1:], pipe.known[1:]):
        # each later window opens on a frame it makes (a window's first latent is a lone video frame) ...
        assert not bool(known.mask[0])
        # ... then carries exactly the latents made before, which the opening frame does not replace
        where = s + torch.nonzero(known.mask).flatten()
        assert len(where) >= plan.overlap and torch.equal(known.latents[:, :, known.mask], latents[:, :, where])
    assert latents[0, 0, :, 0, 0].tolist() == [1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5]


def test_latents_stream_out_while_later_windows_run():
    pipe, _ = run_fake(chain.Plan(40, 5, 2))
    first_yield = pipe.events.index("yield")
    assert pipe.events.count("denoise") > 10
    assert first_yield < 3, "the first frames are handed to the decoder after the first window, not at the end"


def test_colour_is_anchored_to_the_first_window():
    plan = chain.Plan(30, 5, 2, anchor=True)
    _, drifting = run_fake(chain.Plan(30, 5, 2), drift=0.5)
    _, anchored = run_fake(plan, drift=0.5, fake=OddFirstFrame)
    assert anchored[0, 0, 0, 0, 0] == 50  # the first frame, kept, but not part of the level anchored to
    assert drifting[0, 0, -1, 0, 0] >= 10 * drifting[0, 0, 0, 0, 0]  # without anchoring the level runs away
    ends = [e - 1 for _, e in chain.windows(plan)]
    # the last frame of every window is pulled fully back to the first window's level, the others in between
    assert torch.allclose(anchored[0, 0, ends, 0, 0], torch.full((len(ends),), 1.5))
    assert (anchored[:, :, 1:] - 1.5).abs().max() <= (drifting - 1.5).abs().max()


def test_loop_tail_is_the_clip_start():
    pipe, latents = run_fake(chain.Plan(12, 5, 2, loop_tail=1))
    last = pipe.known[-1]
    assert bool(last.mask[-1]) and torch.equal(last.latents[:, :, -1], latents[:, :, 1])
    assert torch.equal(latents[:, :, -1], latents[:, :, 1])


def test_backward_windows_remake_their_first_frame():
    plan = chain.Plan(13, 5, 2, tail=TAIL, backward=True)
    spans = chain.windows(plan)
    assert spans[0][1] == 13 and spans[-1][0] == 0  # from the clip backwards to the start
    pipe, latents = run_fake(plan)
    for w, (s, e) in enumerate(spans[:-1]):
        # the window's first frame is made as a video's first frame, so it is not kept: the next one remakes it
        assert not bool(pipe.known[w + 1].mask[s - spans[w + 1][0]])
        assert latents[0, 0, s, 0, 0] == w + 2


def test_impossible_plans_are_refused():
    with pytest.raises(ValueError):
        chain.windows(chain.Plan(3, 5, 2, head=HEAD, tail=TAIL))  # nothing left to make
    with pytest.raises(ValueError):
        chain.windows(chain.Plan(20, 5, 2, head=HEAD, tail=torch.zeros(1, 2, 3, 1, 1)))  # no room in a window
    with pytest.raises(ValueError):
        chain.windows(chain.Plan(3, 5, 2, loop_tail=1))


# ------------------------------------------------------------------------- features on a tiny random model

@pytest.fixture(scope="module", params=[REPLACE, CLEAN_TOKENS])
def pipe(request, folders):
    return Pipeline.from_pretrained(folders[request.param], device="cpu")


def frames_of(render: editing.Stream) -> np.ndarray:
    frames = np.concatenate(list(render.chunks))
    assert len(frames) == render.num_frames == render.metadata["num_frames"]
    return frames


def moving_square(num_frames: int, width: int = 48, height: int = 32, step: int = 2) -> np.ndarray:
    frames = np.full((num_frames, height, width, 3), 30, np.uint8)
    for t in range(num_frames):
        frames[t, 10:20, 4 + step * t:14 + step * t] = (230, 60, 40)
    return frames


def test_one_window_is_the_plain_pipeline(pipe):
    video = pipe(PROMPT, seed=4, **FAST)
    assert np.array_equal(frames_of(editing.generate(pipe, PROMPT, seed=4, **FAST)), video.frames)


def test_generate_many_is_generate_batched(pipe):
    prompts, seeds, guided = [PROMPT, "a blue ball", "snow"], [4, 9, 4], dict(FAST, guidance_scale=3.0)
    many = editing.generate_many(pipe, prompts, seeds, **guided)
    for prompt, seed, render in zip(prompts, seeds, many):
        one = editing.generate(pipe, prompt, seed=seed, **guided)
        made, expected = frames_of(render), frames_of(one)
        # batched matrix products round differently: a rounding step at most, on few pixels
        diff = np.abs(made.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, prompt
        assert render.metadata == one.metadata
    # a group of one is the same arithmetic as `generate`
    alone = editing.generate_many(pipe, [PROMPT], [4], **guided)[0]
    assert np.array_equal(frames_of(alone), frames_of(editing.generate(pipe, PROMPT, seed=4, **guided)))
    # in two passes (a model trained to animate its first frame), each clip still does not depend on the batch
    for render, seed in zip(editing.generate_many(pipe, prompts[:2], seeds[:2], passes=2, **guided), seeds):
        one = frames_of(editing.generate(pipe, render.metadata["prompt"], seed=seed, passes=2, **guided))
        assert np.abs(frames_of(render).astype(int) - one.astype(int)).max() <= 1
    too_long = dict(FAST, num_frames=4 * pipe.latent_frames(pipe.defaults.num_frames) + 1)
    with pytest.raises(OptionError, match="one window"):
        editing.generate_many(pipe, prompts, seeds, **too_long)


def test_long_video_chains_windows_on_latents(pipe, monkeypatch):
    short = pipe(PROMPT, seed=4, **FAST).frames
    monkeypatch.setattr(pipe, "encode", lambda frames: pytest.fail("a window was re-encoded from pixels"))
    render = editing.generate(pipe, PROMPT, seed=4, num_frames=49, **FAST)
    frames = frames_of(render)
    assert frames.shape == (49, 32, 48, 3) and render.metadata["windows"] > 2
    assert np.array_equal(frames[:17], short), "the first window is the plain video; decoding is one stream"


def test_denoise_progress_ends_full_over_windows_and_passes(pipe):
    """The bar counts every sampler step: a first window drawn in two passes runs twice its steps, the later
    windows (their first frames known) once; it only moves forwards and ends at its total."""
    reports = []

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "denoise":
            reports.append((done, total))

    render = editing.generate(pipe, PROMPT, seed=4, num_frames=49, passes=2, on_progress=on_progress, **FAST)
    frames_of(render)
    done = [d for d, _ in reports]
    windows, steps = render.metadata["windows"], FAST["num_steps"]
    assert done == sorted(done) and reports[-1] == ((windows + 1) * steps,) * 2
    assert all(d <= t for d, t in reports)


def test_extend_keeps_the_clip_and_adds_frames(pipe):
    clip = Clip(moving_square(9), 8.0, "in.mp4")
    forward = frames_of(editing.extend(pipe, clip, 2.0, PROMPT, seed=1, **FAST))
    assert forward.shape[0] == 9 + 16 and np.array_equal(forward[:9], clip.frames)
    backward = frames_of(editing.extend(pipe, clip, 1.5, PROMPT, backward=True, seed=1, **FAST))
    assert backward.shape[0] == 12 + 9 and np.array_equal(backward[-9:], clip.frames)
    assert not np.array_equal(backward[:12], np.repeat(clip.frames[:1], 12, 0))


def test_image_to_video_starts_on_the_image(pipe):
    image = Clip(moving_square(1, 96, 64), None, "first.png")  # twice the size: fitted down
    frames = frames_of(editing.generate(pipe, PROMPT, image=image, seed=2, **FAST))
    assert frames.shape == (17, 32, 48, 3)
    assert np.array_equal(frames[0], fit_frames(image.frames, (48, 32), "crop")[0])


def test_loop_and_connect_lengths(pipe):
    clip = Clip(moving_square(9), 8.0, "in.mp4")
    once = frames_of(editing.loop(pipe, clip, prompt=PROMPT, seed=3, **FAST))
    assert once.shape[0] == 9 + 7 and np.array_equal(once[:9], clip.frames)  # a transition of 4n - 1 frames
    repeated = frames_of(editing.loop(pipe, clip, duration=5.0, prompt=PROMPT, seed=3, **FAST))
    assert repeated.shape[0] == 40 and np.array_equal(repeated[16:32], once)
    made = frames_of(editing.generate(pipe, PROMPT, loop=True, seed=3, **FAST))
    assert made.shape[0] == 16  # 17 asked: the 17th would be the first again
    other = Clip(moving_square(9)[::-1].copy(), 8.0, "b.mp4")
    joined = frames_of(editing.connect(pipe, clip, other, 1.5, PROMPT, seed=3, **FAST))
    assert joined.shape[0] == 9 + 11 + 9 and np.array_equal(joined[-9:], other.frames)


def test_edit_keeps_the_length_and_runs_part_of_the_schedule(pipe, monkeypatch):
    clip = Clip(moving_square(11), 8.0, "in.mp4")  # not 4n + 1: held for encoding, cut back after
    calls = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a: calls.append(1) or forward(*a))
    light = frames_of(editing.edit(pipe, clip, "a cat", 0.5, seed=5, num_steps=4, guidance_scale=1.0))
    assert light.shape == clip.frames.shape and len(calls) == 2  # SDEdit: the last half of 4 steps
    # (that the source is noised to the start's level is tested in test_conditioning)


def test_clips_are_resampled_and_fitted():
    frames = moving_square(30)
    assert len(resample(frames, 30.0, 8.0)) == 8 and np.array_equal(resample(frames, 30.0, 8.0)[1], frames[4])
    wide = moving_square(2, 96, 32)
    assert fit_frames(wide, (48, 32), "crop").shape == (2, 32, 48, 3)
    padded = fit_frames(wide, (48, 32), "pad")
    assert padded.shape == (2, 32, 48, 3) and (padded[:, :8] == 0).all() and (padded[:, -8:] == 0).all()
    assert fit_frames(wide, (48, 32), "stretch").shape == (2, 32, 48, 3)


def test_centroids_track_the_object():
    track = judge.centroids(moving_square(5))
    assert np.allclose(track[:, 0] * 32, 9 + 2 * np.arange(5), atol=0.2)  # units: the short side is 1
    assert np.allclose(track[:, 1] * 32, 15, atol=0.2)
    assert np.isnan(judge.centroids(np.full((2, 32, 48, 3), 30, np.uint8))).all()


# ------------------------------------------------------------------------- the commands

@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_mp4(moving_square(9), tmp_path_factory.mktemp("clips") / "in.mp4", 8.0)


def sora(capsys, folders, *args):
    return call_sora(capsys, *args, "--model", str(folders[REPLACE]), "--steps", "2", "--seed", "1", "--quiet")


def test_extend_command(folders, clip_file, tmp_path, capsys):
    out = tmp_path / "longer.mp4"
    code, stdout, err = sora(capsys, folders, "extend", str(clip_file), "--seconds", "2", "--out", str(out), "--json")
    assert code == 0, err
    info = probe(out)
    assert (info.num_frames, info.fps, info.width, info.height) == (25, 8.0, 48, 32)
    assert json.loads(stdout)["operation"] == "extend" and read_metadata(out)["source"] == "in.mp4"
    before, after = read_video(clip_file)[0], read_video(out)[0]
    assert np.abs(after[:9].astype(int) - before).mean() < 2  # the clip as it was, through H.264 twice
    code, _, err = sora(capsys, folders, "extend", str(clip_file), "--backward", "--out", str(tmp_path / "b.mp4"))
    assert code == 0, err
    assert probe(tmp_path / "b.mp4").num_frames == 16 + 9
    assert np.abs(read_video(tmp_path / "b.mp4")[0][16:].astype(int) - before).mean() < 2


def test_loop_connect_edit_and_image_commands(folders, clip_file, tmp_path, capsys):
    code, _, err = sora(capsys, folders, "loop", str(clip_file), "--duration", "3", "--out", str(tmp_path / "l.mp4"))
    assert code == 0, err
    assert probe(tmp_path / "l.mp4").num_frames == 24
    code, _, err = sora(capsys, folders, "connect", str(clip_file), str(clip_file), "--seconds", "1",
                        "--out", str(tmp_path / "c.mp4"))
    assert code == 0, err
    assert probe(tmp_path / "c.mp4").num_frames == 9 + 7 + 9
    code, _, err = sora(capsys, folders, "edit", str(clip_file), "--prompt", "a cat", "--strength", "0.5",
                        "--out", str(tmp_path / "e.mp4"))
    assert code == 0, err
    assert probe(tmp_path / "e.mp4").num_frames == 9 and read_metadata(tmp_path / "e.mp4")["prompt"] == "a cat"
    image = tmp_path / "first.png"
    image.write_bytes(_png(moving_square(1)[0]))
    code, _, err = sora(capsys, folders, "generate", PROMPT, "--image", str(image), "--out", str(tmp_path / "i.mp4"))
    assert code == 0, err
    first = read_video(tmp_path / "i.mp4")[0][0].astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((first - moving_square(1)[0]) ** 2))
    assert psnr > 30, psnr
    code, _, err = sora(capsys, folders, "generate", PROMPT, "--loop", "--seconds", "2",
                        "--out", str(tmp_path / "g.mp4"))
    assert code == 0, err
    assert probe(tmp_path / "g.mp4").num_frames == 16


def test_inputs_are_brought_to_the_model_and_changes_reported(folders, tmp_path, capsys):
    source = write_mp4(moving_square(17, 64, 32), tmp_path / "fast.mp4", 16.0)
    code, _, err = sora(capsys, folders, "extend", str(source), "--seconds", "1", "--size", "48x32",
                        "--out", str(tmp_path / "x.mp4"))
    assert code == 0, err
    assert "16 fps -> 8 fps" in err and "64x32 -> 48x32 (crop)" in err
    info = probe(tmp_path / "x.mp4")
    assert (info.num_frames, info.fps, info.width) == (round(17 / 2) + 8, 8.0, 48)


@pytest.mark.parametrize("name,content", [("missing.mp4", None), ("empty.mp4", b""), ("junk.mp4", b"not a video"),
                                          ("empty.png", b""), ("junk.gif", b"GIF89a\0\0")])
def test_unreadable_inputs_give_one_line_and_no_file(folders, tmp_path, capsys, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    command = ["generate", PROMPT, "--image", str(path)] if name.endswith("png") else ["extend", str(path)]
    code, stdout, err = sora(capsys, folders, *command, "--out", str(out) + "/")
    assert code != 0 and stdout == ""
    assert err.startswith("error: ") and name in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["extend", "CLIP", "--fit", "zoom"], "--fit"),
    (["edit", "CLIP", "--prompt", "x", "--strength", "0"], "--strength"),
    (["extend", "CLIP", "--seconds", "-1"], "--seconds"), (["loop", "CLIP", "--duration", "0"], "--duration"),
])
def test_bad_editing_options_exit_2(folders, clip_file, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = sora(capsys, folders, *[str(clip_file) if a == "CLIP" else a for a in args])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _png(frame: np.ndarray) -> bytes:
    import subprocess

    import imageio_ffmpeg

    h, w, _ = frame.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
           f"{w}x{h}", "-i", "pipe:0", "-f", "image2pipe", "-c:v", "png", "pipe:1"]
    return subprocess.run(cmd, input=frame.tobytes(), capture_output=True, check=True).stdout
