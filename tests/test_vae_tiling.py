"""Spatial tiling of the Wan VAEs: parity with Diffusers' `enable_tiling` on tiny random models, streamed decoding,
and frames within one tile coded exactly as without tiling."""

from contextlib import contextmanager

import pytest
import torch
from test_vae import CONFIGS, Z, load_ours, randomise, stats, video

from sora_cli.models.wan.vae_tiling import Tiling

diffusers = pytest.importorskip("diffusers")

# Per network: tile and stride in pixels (multiples of the spatial stride, 8 or 16), small enough that frames of a
# few dozen pixels are cut into several overlapping tiles, the last ones shorter.
TILINGS = {"wide": [Tiling(32, 24), Tiling(24, 16)], "flat": [Tiling(32, 24)],
           "wan22": [Tiling(32, 16), Tiling(64, 48)]}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (Diffusers' model, ours loaded from its save_pretrained folder, name), each built once."""
    built = {}

    def get(name: str):
        if name not in built:
            ref = diffusers.AutoencoderKLWan(**CONFIGS[name]).eval()
            randomise(ref, seed=0)
            folder = tmp_path_factory.mktemp(name)
            ref.save_pretrained(folder)
            built[name] = ref, load_ours(folder), name
        return built[name]
    return get


@pytest.fixture(params=list(CONFIGS))
def pair(request, pairs):
    return pairs(request.param)


@contextmanager
def tiling(ref, ours, t: Tiling):
    """Both models tiled alike for the duration of the block."""
    ref.enable_tiling(tile_sample_min_height=t.tile, tile_sample_min_width=t.tile,
                      tile_sample_stride_height=t.stride, tile_sample_stride_width=t.stride)
    ours.tiling = t
    try:
        yield
    finally:
        ref.disable_tiling()
        ours.tiling = None


def latents(f: int, h: int, w: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(2, Z, f, h, w, generator=torch.Generator().manual_seed(seed))


# Latent frames (count, height, width): non-square, with tiles clipped at the far edges.
DECODE_SIZES = {"wide": [(1, 5, 7), (2, 7, 4), (3, 5, 7)], "flat": [(3, 5, 7)],
                "wan22": [(1, 5, 7), (2, 3, 6), (3, 5, 7)]}


def cases(sizes: dict) -> list:
    return [pytest.param(name, t, size, id=f"{name}-{t.tile}/{t.stride}-{'x'.join(map(str, size))}")
            for name in CONFIGS for t in TILINGS[name] for size in sizes[name]]


@pytest.mark.parametrize("name,t,size", cases(DECODE_SIZES))
@torch.no_grad()
def test_tiled_decode_matches_diffusers(pairs, name, t, size):
    ref, ours, _ = pairs(name)
    f, h, w = size
    z = latents(f, h, w)
    mean, std = stats(ref)
    assert max(h, w) > t.tile // ours.spatial_stride  # tiled, for both
    with tiling(ref, ours, t):
        expected = ref.decode(z * std + mean).sample
        got = ours.decode(z)
    whole = ref.decode(z * std + mean).sample
    s = ours.spatial_stride
    assert got.shape == (2, 3, 4 * (f - 1) + 1, s * h, s * w)
    assert (expected - whole).abs().max() > 1e-3  # the seams show: tiling really happened
    assert (expected.abs() < 0.99).float().mean() > 0.5  # mostly not flattened by the final clamp
    diff = (got - expected).abs().max().item()
    print(f"decode {name} {t} f={f} {h}x{w}: max |diff| {diff:.2e}")
    assert diff < 1e-4


# (frames, height, width) in pixels. Wan 2.2 needs larger frames: its encode tiles are measured on the grid of
# 2x2 pixel patches (as in Diffusers), so they cover four times the pixels.
ENCODE_SIZES = {"wide": [(1, 40, 56), (5, 56, 32), (9, 40, 40)], "flat": [(5, 40, 56)],
                "wan22": [(1, 160, 208), (5, 144, 96), (9, 112, 176)]}


@pytest.mark.parametrize("name,t,size", cases(ENCODE_SIZES))
@torch.no_grad()
def test_tiled_encode_matches_diffusers(pairs, name, t, size):
    ref, ours, _ = pairs(name)
    frames, height, width = size
    x = video(2, frames, height, width)
    mean, std = stats(ref)
    assert max(height, width) > t.tile  # tiled, for both
    with tiling(ref, ours, t):
        expected = (ref.encode(x).latent_dist.mean - mean) / std
        got = ours.encode(x)
    whole = ours.encode(x)
    s = ours.spatial_stride
    assert got.shape == (2, Z, (frames - 1) // 4 + 1, height // s, width // s)
    assert expected.std() > 0.1
    assert (got - whole).abs().max() > 1e-3  # the seams show: tiling really happened
    diff = (got - expected).abs().max().item()
    print(f"encode {name} {t} T={frames} {height}x{width}: max |diff| {diff:.2e}")
    assert diff < 1e-4


@torch.no_grad()
def test_streamed_tiled_decode_equals_one_shot(pair):
    ref, ours, name = pair
    t = TILINGS[name][0]
    z = latents(4, 5, 7, seed=3)
    calls = []
    hook = ours.decoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[-2:]))
    try:
        with tiling(ref, ours, t):
            whole = ours.decode(z)
            tiles = len(calls) // 4
            assert tiles >= 4  # several tiles a latent frame, each decoded once per latent frame
            pieces = []
            with ours.decoding() as decode:
                for a, b in ((0, 1), (1, 3), (3, 4)):  # uneven pieces
                    before = len(calls)
                    pieces.append(decode(z[:, :, a:b]))
                    assert len(calls) - before == tiles * (b - a)  # nothing decoded ahead of the piece asked for
                    assert pieces[-1].shape[2] == (1 if a == 0 else 4 * (b - a))
    finally:
        hook.remove()
    assert torch.equal(torch.cat(pieces, dim=2), whole)
    # each call saw one tile of one latent frame, never the whole frame
    assert all(h <= t.tile // ours.spatial_stride and w <= t.tile // ours.spatial_stride for h, w in calls)


@torch.no_grad()
def test_a_frame_within_one_tile_is_coded_whole(pair):
    ref, ours, name = pair
    s = ours.spatial_stride
    t = TILINGS[name][0]
    side = t.tile // s  # latent pixels: exactly one tile
    z = latents(3, side, side - 1, seed=4)
    x = video(1, 5, t.tile, t.tile - s, seed=5)
    untiled = ours.decode(z), ours.encode(x)
    with tiling(ref, ours, t):
        tiled = ours.decode(z), ours.encode(x)
    assert torch.equal(tiled[0], untiled[0]) and torch.equal(tiled[1], untiled[1])


def test_tiling_settings():
    assert Tiling() == Tiling(tile=256, stride=192)  # Diffusers' defaults
    for tile, stride in ((32, 0), (32, 40), (32.0, 16), (True, 1)):
        with pytest.raises(ValueError):
            Tiling(tile, stride)
    with pytest.raises(ValueError, match="multiples"):
        Tiling(36, 24).check(8)
    Tiling(48, 32).check(16)


@torch.no_grad()
def test_tiles_off_the_vae_grid_are_refused(pair):
    _, ours, _ = pair
    ours.tiling = Tiling(36, 20)  # not multiples of 8 or 16
    try:
        with pytest.raises(ValueError, match="multiples"):
            ours.decode(latents(1, 9, 9))
        with pytest.raises(ValueError, match="multiples"):
            ours.encode(video(1, 1, 16, 16))  # refused even where no tiling would happen
    finally:
        ours.tiling = None
