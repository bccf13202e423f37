"""Image-to-video checkpoints (Wan's input layout: the given frames as channels beside the noisy latents) against
diffusers' WanImageToVideoPipeline, on tiny random folders it saved itself: Wan 2.1 I2V (a CLIP image encoder,
image cross-attention), Wan 2.1 FLF2V (a first and a last frame), and Wan 2.2 I2V A14B (two experts, no image
encoder); and the commands end to end on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import add_sora_defaults, tiny_wan_components
from sora_cli import Pipeline, editing
from sora_cli.clips import Clip
from sora_cli.errors import OptionError
from sora_cli.video import probe, read_metadata
from test_cli import call_sora
from test_pipeline import NEGATIVE, PROMPT, reference_frames

# diffusers' I2V attention finds the image tokens by counting 512 text tokens back: the prompts are 512 long.
TEXT = 512
SETTINGS = dict(height=32, width=48, num_frames=9, guidance_scale=5.0, shift=3.0, seed=1234)
CLIP_TOKENS = (32 // 8) ** 2 + 1  # a 32-pixel image in 8-pixel patches, and the class token
I2V = dict(in_channels=36, out_channels=16)  # 16 noisy latent channels, a 4-channel mask, 16 of the given frames


def save_tiny_i2v(folder, kind: str, **defaults):
    """A tiny WanImageToVideoPipeline folder: "i2v" (Wan 2.1, CLIP), "flf2v" (its two-frame variant) or "a14b"
    (Wan 2.2 I2V: two experts, no image encoder)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    extra: dict = {}
    transformer = dict(I2V)
    if kind in ("i2v", "flf2v"):
        torch.manual_seed(5)
        extra["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=8)).eval()
        extra["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
        transformer |= dict(image_dim=4, added_kv_proj_dim=24)
        if kind == "flf2v":
            transformer["pos_embed_seq_len"] = 2 * CLIP_TOKENS
    components = tiny_wan_components(0, transformer=transformer)
    if kind == "a14b":
        extra |= dict(transformer_2=tiny_wan_components(1, transformer=transformer)["transformer"],
                      boundary_ratio=0.875)
    with torch.no_grad():  # diffusers starts these at zero or one, which would hide them from the comparison
        g = torch.Generator().manual_seed(6)
        for name, p in components["transformer"].named_parameters():
            if "pos_embed" in name or "norm_added" in name:
                p.normal_(generator=g)
    pipeline = WanImageToVideoPipeline(**components, **extra)
    pipeline.save_pretrained(folder)
    return add_sora_defaults(folder, **dict(text_length=TEXT, num_frames=9) | defaults)


@pytest.fixture(scope="module", params=["i2v", "flf2v", "a14b"])
def kind_dir(request, tmp_path_factory):
    return request.param, save_tiny_i2v(tmp_path_factory.mktemp(request.param) / request.param, request.param)


def picture(seed: int, height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth random image, so that its latents and features are not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 32.0
    channels = [np.sin(rng.uniform(1, 4) * x + rng.uniform(1, 4) * y + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(channels, -1) + 1) * 127.5).round().astype(np.uint8)


def ours(pipe, first: np.ndarray, last: np.ndarray | None = None, seed: int = 1234) -> np.ndarray:
    stream = editing.generate(pipe, PROMPT, Clip(first[None], None, "first.png"), num_steps=4, negative_prompt=NEGATIVE,
                              last_image=None if last is None else Clip(last[None], None, "last.png"),
                              **dict(SETTINGS, seed=seed))
    return np.concatenate(list(stream.chunks))


def theirs(folder, first: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from PIL import Image

    reference = WanImageToVideoPipeline.from_pretrained(folder)
    # Its prompt cleaning needs ftfy, which is not installed: the prompts go in encoded, by the same text encoder.
    text = WanPipeline(tokenizer=reference.tokenizer, text_encoder=reference.text_encoder, vae=reference.vae,
                       scheduler=reference.scheduler, transformer=reference.transformer)
    embeds, negative_embeds = text.encode_prompt(PROMPT, NEGATIVE, max_sequence_length=TEXT)
    kw = dict(last_image=Image.fromarray(last)) if last is not None else {}
    return reference_frames(reference, "unipc", image=Image.fromarray(first), prompt_embeds=embeds,
                            negative_prompt_embeds=negative_embeds, num_inference_steps=4,
                            **kw, **SETTINGS)


def off_by_more_than_2(frames: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(frames.astype(int) - expected.astype(int)) > 2).mean())


def test_the_first_frame_matches_diffusers(kind_dir):
    kind, folder = kind_dir
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    assert pipe.takes_images and (pipe.image_encoder is not None) == (kind != "a14b")
    first = picture(1)
    if kind == "flf2v":  # its image tokens are two frames' (diffusers cannot run it on one either)
        with pytest.raises(OptionError, match="needs a last frame"):
            ours(pipe, first)
        return
    frames, expected = ours(pipe, first), theirs(folder, first)
    assert frames.shape == expected.shape == (9, 32, 48, 3)
    assert np.array_equal(frames[0], first)  # written as given; diffusers decodes its latents
    assert expected.std() > 5
    off = off_by_more_than_2(frames[1:], expected[1:])
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def test_the_first_and_last_frames_match_diffusers(kind_dir):
    kind, folder = kind_dir
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    first, last = picture(1), picture(3)
    if kind == "i2v":  # Wan 2.1 I2V's image tokens have no positions for a second frame
        with pytest.raises(OptionError, match="first frame only"):
            ours(pipe, first, last)
        return
    frames, expected = ours(pipe, first, last), theirs(folder, first, last)
    assert np.array_equal(frames[0], first) and np.array_equal(frames[-1], last)
    off = off_by_more_than_2(frames[1:-1], expected[1:-1])
    assert off <= 0.001, f"{off:.4%} of pixels more than 2 levels off"


def test_the_given_frames_reach_the_transformer(kind_dir):
    """What the comparisons above rest on: another first or last frame changes what every expert predicts (a tiny
    random model's response is too small to show in 8-bit frames, so it is measured before decoding)."""
    kind, folder = kind_dir
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    job = pipe.resolve(PROMPT, **{k: v for k, v in SETTINGS.items() if k != "guidance_scale"})
    x = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    context = pipe.encode_text([PROMPT])
    ends = {0: picture(1)} | ({} if kind == "i2v" else {-1: picture(3)})
    changed = [{**ends, 0: picture(2)}] + ([] if kind == "i2v" else [{**ends, -1: picture(6)}])
    for model in filter(None, (pipe.transformer, pipe.transformer_2)):
        def velocity(images):
            given = pipe.image_input(job, images)
            return model(torch.cat([x, given.channels], 1), torch.tensor([500.0]), context, given.features)
        base = velocity(ends)
        for images in changed:
            assert (velocity(images) - base).abs().max() > 1e-4


def test_an_image_to_video_checkpoint_needs_its_image(kind_dir, tmp_path, capsys):
    _, folder = kind_dir
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(folder), "--out", str(tmp_path / "x.mp4"))
    assert code == 2 and "give it the first frame (--image)" in err and not (tmp_path / "x.mp4").exists()


def test_generate_with_images_end_to_end(kind_dir, tmp_path, capsys):
    from PIL import Image

    kind, folder = kind_dir
    Image.fromarray(picture(4)).save(tmp_path / "first.png")
    Image.fromarray(picture(5)).save(tmp_path / "last.png")
    ends = [] if kind == "i2v" else ["--last-image", str(tmp_path / "last.png")]
    out = tmp_path / "made.mp4"
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(folder), "--image", str(tmp_path / "first.png"),
                             *ends, "--steps", "1", "--out", str(out))
    assert code == 0, err
    info = probe(out)
    assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 48, 32, 9)
    meta = read_metadata(out)
    assert meta["image"] == "first.png" and meta.get("last_image") == ("last.png" if ends else None)


@pytest.mark.parametrize("command", ["extend", "loop", "connect", "edit"])
def test_the_editing_commands_use_the_given_frames(kind_dir, command, tmp_path, capsys):
    """extend: image-to-video from the clip's last frame (not on a first-last-frame checkpoint); loop and
    connect: first-last-frame from one clip's end into a start (not on Wan 2.1 I2V); edit redoes every frame,
    which these checkpoints cannot."""
    from PIL import Image

    kind, folder = kind_dir
    clip = tmp_path / "clip.mp4"
    Image.fromarray(picture(4)).save(tmp_path / "first.png")
    ends = ["--last-image", str(tmp_path / "first.png")] if kind == "flf2v" else []
    code, _, err = call_sora(capsys, "generate", PROMPT, "--model", str(folder), "--image", str(tmp_path / "first.png"),
                             *ends, "--steps", "1", "--out", str(clip))
    assert code == 0, err
    out = tmp_path / "made.mp4"
    inputs = [str(clip), str(clip)] if command == "connect" else [str(clip)]
    code, _, err = call_sora(capsys, command, *inputs, *(["--prompt", "x"] if command == "edit" else []),
                             "--model", str(folder), "--steps", "1", "--out", str(out))
    refused = {"i2v": ("loop", "connect"), "flf2v": ("extend",)}.get(kind, ()) + ("edit",)
    if command in refused:
        assert code == 2 and any(w in err for w in ("cannot", "first frame only", "needs a last frame"))
        assert not out.exists()
        return
    assert code == 0, err
    frames = {"extend": 9 + 16, "loop": 9 + 7, "connect": 9 + 7 + 9}[command]  # extend adds 2 s at 8 fps
    assert probe(out).num_frames == frames
