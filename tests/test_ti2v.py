"""Wan 2.2 TI2V-5B's layout (the Wan 2.2 VAE, a timestep per token): text-to-video against diffusers' WanPipeline
and image-to-video against its WanImageToVideoPipeline, both with `expand_timesteps`, on a tiny random folder
diffusers saved itself; and every command end to end on it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TEXT_LENGTH, add_sora_defaults, tiny_wan_components
from sora_cli import Pipeline, editing
from sora_cli.clips import Clip
from sora_cli.conditioning import CLEAN_TOKENS
from sora_cli.video import probe, read_metadata
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT, reference_frames

# A tiny Wan 2.2 VAE: 2x2 pixel patches folded into channels, shortcuts around its blocks, 16x spatial stride.
TI2V_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)
SETTINGS = dict(negative_prompt=NEGATIVE, height=32, width=64, num_frames=9, guidance_scale=5.0, shift=3.0, seed=1234)


def save_tiny_ti2v(folder, **defaults):
    from diffusers import WanPipeline

    WanPipeline(**tiny_wan_components(0, vae=TI2V_VAE), expand_timesteps=True).save_pretrained(folder)
    return add_sora_defaults(folder, **dict(width=64, height=32) | defaults)


@pytest.fixture(scope="module")
def ti2v_dir(tmp_path_factory):
    return save_tiny_ti2v(tmp_path_factory.mktemp("ti2v") / "ti2v", num_frames=17)


@pytest.fixture(scope="module")
def ours(ti2v_dir):
    return Pipeline.from_pretrained(ti2v_dir, device="cpu")


def off_by_more_than_2(frames: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(frames.astype(int) - expected.astype(int)) > 2).mean())


def test_the_folder_is_read_as_ti2v(ours):
    assert ours.vae.config.is_residual and ours.size_multiple == 32  # 16x VAE stride, 2x2 transformer patches
    assert ours.conditioning == CLEAN_TOKENS  # its native image conditioning: the first frame clean, at t = 0


def test_text_to_video_matches_diffusers(ours, ti2v_dir):
    from diffusers import WanPipeline

    reference = WanPipeline.from_pretrained(ti2v_dir)
    assert reference.config.expand_timesteps
    video = ours(PROMPT, num_steps=4, **SETTINGS)
    expected = reference_frames(reference, "unipc", prompt=PROMPT, num_inference_steps=4, **SETTINGS)
    assert expected.std() > 5, "the reference frames are flat, so this comparison would prove nothing"
    assert video.frames.shape == expected.shape == (9, 32, 64, 3)
    off = off_by_more_than_2(video.frames, expected)
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def picture(seed: int) -> np.ndarray:
    """A smooth random 64x32 image, so its latents are not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:64] / 32.0
    channels = [np.sin(rng.uniform(1, 4) * x + rng.uniform(1, 4) * y + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(channels, -1) + 1) * 127.5).round().astype(np.uint8)


def our_image_to_video(pipe, image: np.ndarray) -> np.ndarray:
    stream = editing.generate(pipe, PROMPT, Clip(image[None], None, "first.png"), num_steps=4, **SETTINGS)
    return np.concatenate(list(stream.chunks))


def test_image_to_video_matches_diffusers(ours, ti2v_dir):
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from PIL import Image

    t2v = WanPipeline.from_pretrained(ti2v_dir)
    reference = WanImageToVideoPipeline(**{k: getattr(t2v, k) for k in ("tokenizer", "text_encoder", "vae",
                                                                        "scheduler", "transformer")},
                                        expand_timesteps=True)
    image = picture(1)
    frames = our_image_to_video(ours, image)
    # WanImageToVideoPipeline cleans prompts with ftfy, which is not installed: the text goes in encoded, by the
    # text-to-video pipeline, whose encoder the two share.
    embeds, negative_embeds = t2v.encode_prompt(PROMPT, NEGATIVE, max_sequence_length=TEXT_LENGTH)
    kw = {k: v for k, v in SETTINGS.items() if k != "negative_prompt"}
    expected = reference_frames(reference, "unipc", image=Image.fromarray(image), prompt_embeds=embeds,
                                negative_prompt_embeds=negative_embeds, num_inference_steps=4, **kw)
    assert frames.shape == expected.shape == (9, 32, 64, 3)
    assert np.array_equal(frames[0], image)  # the given frame is written as given; diffusers decodes its latents
    off = off_by_more_than_2(frames[1:], expected[1:])
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"
    # and the image decides the rest: another image, the same seed, other frames
    other = our_image_to_video(ours, picture(2))
    assert off_by_more_than_2(other[1:], frames[1:]) > 0.05


@pytest.mark.parametrize("command", ["generate", "image", "extend", "loop", "connect"])
def test_every_command_runs_on_it(command, ti2v_dir, tmp_path, capsys):
    from PIL import Image

    clip = tmp_path / "clip.mp4"
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(ti2v_dir), "--steps", "1", "--out", str(clip))
    assert code == 0, err
    Image.fromarray(picture(3)).save(tmp_path / "first.png")
    inputs = {"generate": [PROMPT], "image": [PROMPT, "--image", str(tmp_path / "first.png")], "extend": [str(clip)],
              "loop": [str(clip)], "connect": [str(clip), str(clip)]}[command]
    out = tmp_path / "made.mp4"
    name = "generate" if command == "image" else command
    code, _, err = call_sora(capsys, name, *inputs, "--model", str(ti2v_dir), "--steps", "1", "--out", str(out))
    assert code == 0, err
    info = probe(out)
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 64, 32)
    assert info.num_frames > (17 if command in ("extend", "loop", "connect") else 16)
    assert read_metadata(out)["model"] == str(ti2v_dir)
