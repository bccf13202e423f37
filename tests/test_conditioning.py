"""Known frames during sampling, on tiny random Wan-layout models, in both modes: clean tokens at timestep 0
(a model trained for it) and latent replacement (Wan 2.1); and SDEdit's start."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from sora_cli import Pipeline
from sora_cli.conditioning import CLEAN_TOKENS, REPLACE, Guide, KnownFrames, conditioning_mode, sdedit_start
from sora_cli.sampling import add_noise, flow_sigmas

PROMPT = "a red fox running through snow"
KNOWN = torch.tensor([True, True, False, False, True])  # 5 latent frames: both ends known


@pytest.fixture(scope="module")
def pipes(folders):
    return {mode: Pipeline.from_pretrained(folder, device="cpu") for mode, folder in folders.items()}


class Spy:
    """Records what the transformer receives on every call."""

    def __init__(self, pipe):
        self.calls, self.pipe, self.forward = [], pipe, pipe.transformer.forward

    def __enter__(self):
        def forward(x, timestep, context, *rest):
            self.calls.append((x.detach().clone(), timestep.detach().clone()))
            return self.forward(x, timestep, context, *rest)

        self.pipe.transformer.forward = forward
        return self

    def __exit__(self, *exc):
        del self.pipe.transformer.forward  # back to the class's method


def setup(pipe, steps=4, guidance=1.0, seed=0):
    job = pipe.resolve(PROMPT, num_steps=steps, guidance_scale=guidance, seed=seed, height=32, width=48)
    noise = pipe.draw_noise(job, torch.Generator().manual_seed(seed))
    clean = torch.randn(noise.shape, generator=torch.Generator().manual_seed(99))
    return job, pipe.encode_prompt(job), noise, KnownFrames(clean, KNOWN.clone())


def test_checkpoints_choose_the_mode(pipes):
    assert pipes[CLEAN_TOKENS].conditioning == CLEAN_TOKENS
    assert pipes[REPLACE].conditioning == REPLACE  # a Wan checkpoint says nothing: replacement
    assert conditioning_mode(None) == conditioning_mode("something else") == REPLACE
    assert Pipeline.from_pretrained("sora-tiny", device="cpu").conditioning == CLEAN_TOKENS


def test_clean_tokens_reach_the_transformer_at_timestep_zero(pipes):
    pipe = pipes[CLEAN_TOKENS]
    job, context, noise, known = setup(pipe, guidance=3.0)  # guidance: a batch of two, both conditioned alike
    sigmas, timesteps = flow_sigmas(4, job.shift, job.sampler)
    with Spy(pipe) as spy:
        latents = pipe.denoise(job, context, noise, known)
    assert len(spy.calls) == 4
    grid = pipe.transformer.token_grid(*noise.shape[2:])
    per_frame = grid[1] * grid[2]
    for i, (x, t) in enumerate(spy.calls):
        assert t.shape == (2, 5 * per_frame)
        t_frames = t.view(2, 5, per_frame)
        assert (t_frames[:, KNOWN] == 0).all()
        assert (t_frames[:, ~KNOWN] == timesteps[i]).all() and timesteps[i] > 0
        assert torch.equal(x[:, :, KNOWN], known.latents[:, :, KNOWN].expand(2, -1, -1, -1, -1))
        assert not torch.equal(x[:, :, ~KNOWN], known.latents[:, :, ~KNOWN].expand(2, -1, -1, -1, -1))
    assert torch.equal(latents[:, :, KNOWN], known.latents[:, :, KNOWN])
    assert (latents[:, :, ~KNOWN] - known.latents[:, :, ~KNOWN]).abs().mean() > 0.1


def test_replacement_resets_known_frames_before_every_step(pipes):
    pipe = pipes[REPLACE]
    job, context, noise, known = setup(pipe)
    sigmas, timesteps = flow_sigmas(4, job.shift, job.sampler)
    with Spy(pipe) as spy:
        latents = pipe.denoise(job, context, noise, known)
    assert len(spy.calls) == 4
    for i, (x, t) in enumerate(spy.calls):
        assert t.shape == (1,) and t[0] == timesteps[i]  # one timestep for every token
        expected = add_noise(known.latents, noise, float(sigmas[i]))  # the same noise the sample started from
        assert torch.allclose(x[:, :, KNOWN], expected[:, :, KNOWN], atol=1e-6)
        if i:  # at step 0 everything is (almost) the noise itself
            assert not torch.allclose(x[:, :, ~KNOWN], expected[:, :, ~KNOWN], atol=1e-3)
    assert torch.equal(latents[:, :, KNOWN], known.latents[:, :, KNOWN])


@pytest.mark.parametrize("mode", [CLEAN_TOKENS, REPLACE])
def test_known_frames_steer_the_rest(pipes, mode):
    """Both modes show the model the known frames: the frames next to them come out differently."""
    pipe = pipes[mode]
    job, context, noise, known = setup(pipe, steps=3)
    other = KnownFrames(-known.latents, known.mask)
    a = pipe.denoise(job, context, noise, known)
    b = pipe.denoise(job, context, noise, other)
    assert (a[:, :, ~KNOWN] - b[:, :, ~KNOWN]).abs().mean() > 1e-3
    # and nothing known is the plain text-to-video sample
    plain = pipe.denoise(job, context, noise)
    assert torch.equal(pipe.denoise(job, context, noise, KnownFrames.nothing(known.latents)), plain)


def test_two_passes_draw_then_animate_the_first_frame(pipes):
    """A model trained to animate a known first frame makes text-to-video in two passes: the clip drawn as usual,
    then the rest generated again with its first latent frame known, from the noise with its channels rotated."""
    pipe = pipes[CLEAN_TOKENS]
    job, context, noise, known = setup(pipe, guidance=3.0)
    drawn = pipe.denoise(job, context, noise)
    job = dataclasses.replace(job, passes=2)
    steps = []
    with Spy(pipe) as spy:
        two = pipe.denoise(job, context, noise, on_step=lambda i, n: steps.append((i, n)))
    assert len(spy.calls) == 2 * job.num_steps and steps == [(i, 8) for i in range(1, 9)]
    first = torch.tensor([True, False, False, False, False])
    assert torch.equal(two, pipe.denoise(job, context, noise.roll(noise.shape[1] // 2, 1), KnownFrames(drawn, first)))
    assert torch.equal(two[:, :, 0], drawn[:, :, 0]) and (two[:, :, 1:] - drawn[:, :, 1:]).abs().mean() > 1e-3
    # known frames or SDEdit already fix the start: one pass, as before
    for given, strength in ((known, 1.0), (KnownFrames.nothing(drawn), 0.5)):
        with Spy(pipe) as spy:
            pipe.denoise(job, context, noise, given, strength)
        assert len(spy.calls) == job.num_steps - sdedit_start(strength, job.num_steps)


def test_clean_tokens_with_an_x0_predicting_model(folders, tmp_path):
    """sora-tiny predicts x0; the velocity is derived per token from the solver's state as before."""
    folder = tmp_path / "x0"
    shutil.copytree(folders[CLEAN_TOKENS], folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"prediction_type": "sample"}))
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    job, context, noise, known = setup(pipe, guidance=2.0)
    latents = pipe.denoise(job, context, noise, known)
    assert torch.isfinite(latents).all()
    assert torch.equal(latents[:, :, KNOWN], known.latents[:, :, KNOWN])


@pytest.mark.parametrize("strength,steps,start", [(1.0, 20, 0), (0.6, 20, 8), (0.29, 100, 71), (0.01, 10, 9),
                                                  (0.5, 4, 2)])
def test_sdedit_start_from_strength(strength, steps, start):
    assert sdedit_start(strength, steps) == start


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5])
def test_sdedit_strength_out_of_range(strength):
    with pytest.raises(ValueError, match="strength"):
        sdedit_start(strength, 10)


@pytest.mark.parametrize("mode", [CLEAN_TOKENS, REPLACE])
def test_sdedit_starts_from_the_noised_source(pipes, mode):
    pipe = pipes[mode]
    job, context, noise, known = setup(pipe)
    source = KnownFrames.nothing(known.latents)
    sigmas, _ = flow_sigmas(4, job.shift, job.sampler)
    with Spy(pipe) as spy:
        half = pipe.denoise(job, context, noise, source, strength=0.5)
    assert len(spy.calls) == 2  # steps 2 and 3 of 4
    assert torch.allclose(spy.calls[0][0], add_noise(source.latents, noise, float(sigmas[2])), atol=1e-6)
    full = pipe.denoise(job, context, noise, source, strength=1.0)
    assert (half - source.latents).abs().mean() < (full - source.latents).abs().mean()
    with pytest.raises(ValueError, match="source"):
        pipe.denoise(job, context, noise, None, strength=0.5)


def test_known_frames_must_fit_the_latent():
    with pytest.raises(ValueError, match="mask"):
        KnownFrames(torch.zeros(1, 16, 5, 2, 2), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="do not match"):
        Guide(KnownFrames.nothing(torch.zeros(1, 16, 5, 2, 2)), torch.zeros(1, 16, 4, 2, 2), torch.ones(3), REPLACE,
              (4, 1, 1))
    known = KnownFrames.nothing(torch.zeros(1, 2, 5, 1, 1)).with_frames(3, torch.ones(1, 2, 2, 1, 1))
    assert known.mask.tolist() == [False, False, False, True, True]
    assert known.latents[0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="outside"):
        known.with_frames(4, torch.ones(1, 2, 2, 1, 1))
