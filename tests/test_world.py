"""The synthetic captioned world (sora_cli.tiny.world) and its evaluation judge (sora_cli.tiny.judge)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sora_cli.tiny import captions as C
from sora_cli.tiny import judge as J
from sora_cli.tiny import world as W


def _blur_and_noise(clip: np.ndarray, sigma: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Mimic a decoder's output: a spatial Gaussian blur plus Gaussian pixel noise."""
    x = clip.astype(np.float32)
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    x = x + rng.normal(0.0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _border(clip: np.ndarray) -> np.ndarray:
    return np.concatenate([e.reshape(-1, 3) for e in (clip[:, 0], clip[:, -1], clip[:, :, 0], clip[:, :, -1])])


def _sorted(facts: J.Facts) -> list[J.ObjectFacts]:
    return sorted(facts.objects, key=lambda o: (o.color, o.shape))


# ---------------------------------------------------------------- vocabulary and sampling


def test_palette_is_the_css_named_colours_with_enough_object_and_background_choices():
    assert W.COLORS["red"] == (255, 0, 0) and W.COLORS["orange"] == (255, 165, 0)
    assert W.COLORS["green"] == (0, 128, 0) and W.COLORS["lime"] == (0, 255, 0)
    assert W.COLORS["pink"] == (255, 192, 203) and W.COLORS["gray"] == (128, 128, 128)
    assert len(W.OBJECT_COLORS) >= 8 and len(W.BACKGROUNDS) >= 5
    assert {"circle", "square", "triangle"} < set(W.SHAPES) and len(W.SHAPES) >= 4
    assert set(W.MOTIONS) >= {"left", "right", "up", "down", "up-left", "up-right", "down-left",
                              "down-right", "bounce", "grow", "shrink", "spin", "still"}


def test_legibility_rejects_washed_out_pairs_and_keeps_clear_ones():
    assert not W.legible("pink", "white") and not W.legible("yellow", "white")
    assert not W.legible("black", "black")
    assert W.legible("red", "black") and W.legible("white", "blue") and W.legible("black", "white")


def test_sampling_captioning_and_rendering_are_deterministic_for_a_seed():
    def draw(seed: int) -> tuple:
        rng = np.random.default_rng(seed)
        scene = W.sample_scene(rng)
        return scene, C.caption(scene, rng), W.draw(scene, 9, 48, 80)

    (s1, c1, v1), (s2, c2, v2) = draw(7), draw(7)
    assert s1 == s2 and c1 == c2 and np.array_equal(v1, v2)
    others = [draw(seed) for seed in range(8, 12)]
    assert any(s != s1 for s, _, _ in others) and any(c != c1 for _, c, _ in others)


def test_every_shape_colour_background_motion_and_speed_appears():
    rng = np.random.default_rng(0)
    seen: dict[str, set] = {k: set() for k in ("shape", "color", "motion", "speed", "background", "count")}
    for _ in range(1500):
        scene = W.sample_scene(rng)
        seen["background"].add(scene.background)
        seen["count"].add(len(scene.objects))
        for obj in scene.objects:
            for key in ("shape", "color", "motion", "speed"):
                seen[key].add(getattr(obj, key))
    assert seen["shape"] == set(W.SHAPES) and seen["color"] == set(W.OBJECT_COLORS)
    assert seen["motion"] == set(W.MOTIONS) and seen["speed"] == set(W.SPEEDS)
    assert seen["background"] == set(W.BACKGROUNDS) and seen["count"] == {1, 2}


def test_objects_are_legible_on_their_background_and_against_each_other():
    rng = np.random.default_rng(1)
    for _ in range(800):
        scene = W.sample_scene(rng)
        for obj in scene.objects:
            assert obj.color != scene.background and W.legible(obj.color, scene.background)
        if len(scene.objects) == 2:
            a, b = scene.objects
            assert a.color != b.color and W.legible(a.color, b.color)


# ---------------------------------------------------------------- held-out split


def test_heldout_combinations_are_disjoint_from_training_and_cover_every_value():
    train, heldout = set(W.combinations("train")), set(W.combinations("heldout"))
    assert train and heldout and not (train & heldout)
    assert 0.05 < len(heldout) / (len(train) + len(heldout)) < 0.2
    for index, values in enumerate((W.SHAPES, W.OBJECT_COLORS, W.BACKGROUNDS, W.MOTIONS)):
        assert {c[index] for c in train} == set(values)
        assert {c[index] for c in heldout} == set(values)
    assert ("circle", "red", "black", "spin") not in train | heldout  # invisible motion
    with pytest.raises(ValueError):
        W.combinations("test")


def test_scenes_of_each_split_use_only_their_combinations():
    rng = np.random.default_rng(2)
    train, heldout = set(W.combinations("train")), set(W.combinations("heldout"))
    for _ in range(600):
        scene = W.sample_scene(rng, "train")
        assert all((o.shape, o.color, scene.background, o.motion) in train for o in scene.objects)
        scene = W.sample_scene(rng, "heldout")
        first = scene.objects[0]
        assert (first.shape, first.color, scene.background, first.motion) in heldout


def _pool_phrases(pools: W.Pools) -> tuple[set[str], set[str]]:
    def flat(group) -> set[str]:
        return {p for entry in group for p in ((entry,) if isinstance(entry, str) else entry)}

    return flat(pools[0]), flat(pools[1])


def _all_pools() -> list[W.Pools]:
    return [*C.SHAPE_WORDS.values(), C.VERBS, *C.DIRECTION_WORDS.values(), *C.VERTICAL_VERBS.values(),
            *C.MOTION_PHRASES.values(), *C.SPEED_WORDS.values(), C.BACKGROUND_PHRASES, C.BACKGROUND_NOUNS]


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\.?", re.IGNORECASE)


def test_heldout_phrasings_are_disjoint_from_training_and_never_leak_into_training_captions():
    for n in (1, 2):
        assert not set(C.TEMPLATES["train"][n]) & set(C.TEMPLATES["heldout"][n])
    heldout_phrases: set[str] = set()
    for pools in _all_pools():
        train, heldout = _pool_phrases(pools)
        assert train and not (train & heldout)
        heldout_phrases |= heldout
    colour_words = [*W.COLORS, "grey"]
    expanded = {p.format(c=c) for p in heldout_phrases for c in colour_words}
    leak = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, expanded), key=len, reverse=True)) + r")\b", re.I)
    heldout_templates = [_template_regex(t) for n in (1, 2) for t in C.TEMPLATES["heldout"][n]]

    rng = np.random.default_rng(3)
    heldout_seen = set()
    for _ in range(1500):
        scene = W.sample_scene(rng, "train")
        text = C.caption(scene, rng, "train")
        assert not leak.search(text), text
        assert not any(t.fullmatch(text) for t in heldout_templates), text
        scene = W.sample_scene(rng, "heldout")
        text = C.caption(scene, rng, "heldout")
        assert any(t.fullmatch(text) for t in heldout_templates), text
        heldout_seen |= {m.group(0).lower() for m in leak.finditer(text)}
    # Held-out captions do use the held-out synonyms (not just the held-out templates).
    assert {"disk", "tile", "lozenge", "gliding", "swiftly"} <= heldout_seen


# ---------------------------------------------------------------- captions and parsing


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_captions_parse_back_to_the_scene_facts(split: str):
    rng = np.random.default_rng(4)
    spoken = moving = 0
    for _ in range(1500):
        scene = W.sample_scene(rng, split)
        text = C.caption(scene, rng, split)
        parsed, truth = J.parse_caption(text), J.scene_facts(scene)
        assert parsed.background == truth.background, text
        got, want = _sorted(parsed), _sorted(truth)
        assert [(o.color, o.shape, o.motion) for o in got] == [(o.color, o.shape, o.motion) for o in want], text
        for g, w in zip(got, want):
            assert g.speed in (None, w.speed), text
            moving += w.speed is not None
            spoken += g.speed is not None
    assert 0.6 < spoken / moving < 0.95  # the pace is usually, not always, stated


def test_parse_handles_hand_written_prompts():
    facts = J.parse_caption("a red circle moving right on a black background")
    assert facts == J.Facts("black", (J.ObjectFacts("red", "circle", "right", None),))
    facts = J.parse_caption("A yellow square and a blue ball against grey; the yellow square slides left "
                            "quickly and the blue ball is spinning.")
    assert facts.background == "gray"
    assert facts.objects == (J.ObjectFacts("yellow", "square", "left", "fast"),
                             J.ObjectFacts("blue", "circle", "spin", None))
    assert J.parse_caption("On white, a green triangle slowly drifts up and to the left").objects[0].motion == "up-left"
    assert J.parse_caption("a purple star that does not move, on gray").objects[0].motion == "still"


# ---------------------------------------------------------------- rendering


def test_buckets_cover_the_aspect_ratios_at_small_budgets_and_4n_plus_1_frames():
    buckets = W.buckets()
    ratios = {round(w / h, 2) for h, w, _ in buckets}
    for aw, ah in W.ASPECTS:
        assert any(abs(r / (aw / ah) - 1) < 0.1 for r in ratios), (aw, ah)
    for h, w, t in buckets:
        assert h % 16 == 0 and w % 16 == 0 and (t - 1) % 4 == 0
        assert min(abs(np.log(h * w / area)) for area in W.PIXEL_BUDGETS) < 0.35
    assert {t for _, _, t in buckets} == set(W.DURATIONS)


def test_render_gives_uint8_clips_of_every_bucket_with_the_object_visible():
    rng = np.random.default_rng(5)
    for height, width, frames in [*W.buckets(), (1, 1, 1), (17, 23, 2)]:
        scene = W.sample_scene(rng)
        clip = W.draw(scene, frames, height, width, fps=W.FPS)
        assert clip.shape == (frames, height, width, 3) and clip.dtype == np.uint8
        if height >= 48:
            bg = np.array(W.COLORS[scene.background])
            differs = (clip != bg).any(axis=-1)
            assert differs.any(axis=(1, 2)).all()  # an object in every frame
            assert differs.mean() < 0.5  # and it does not fill the frame
    with pytest.raises(ValueError):
        W.draw(scene, 0, 64, 64)


def test_render_is_resolution_independent_and_anti_aliased():
    scene = W.Scene("black", [W.ObjectSpec("triangle", "white", "right", "slow", size=0.15, angle=0.2)])
    small = W.draw(scene, 5, 48, 80).astype(np.float32)
    large = W.draw(scene, 5, 96, 160).astype(np.float32)
    pooled = large.reshape(5, 48, 2, 80, 2, 3).mean(axis=(2, 4))
    assert np.abs(pooled - small).mean() < 0.5  # measured 0.08
    values = np.unique(small[..., 0])
    assert len(values) > 10  # soft edges, not a hard 0/255 mask


def test_motion_is_measured_in_units_per_second():
    rng = np.random.default_rng(6)
    for _ in range(10):
        scene = W.sample_scene(rng)
        assert np.array_equal(W.draw(scene, 17, 48, 48, fps=16.0)[::2], W.draw(scene, 9, 48, 48, fps=8.0))


@pytest.mark.parametrize("aspect", [(16, 9), (9, 16)])
def test_objects_stay_in_frame_for_wide_and_tall_buckets(aspect: tuple[int, int]):
    rng = np.random.default_rng(7)
    sizes = {W.bucket_size(*aspect, area) for area in W.PIXEL_BUDGETS}
    for height, width in sizes:
        for frames in W.DURATIONS:
            for k in range(24):
                scene = W.sample_scene(rng, num_objects=1 + k % 2)
                clip = W.draw(scene, frames, height, width)
                assert (_border(clip) == W.COLORS[scene.background]).all(), scene


# ---------------------------------------------------------------- judge


def _judge_accuracy(count: int, seed: int, sigma: float = 0.0, noise: float = 0.0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    buckets = W.buckets()
    hits = {"background": 0, "color": 0, "shape": 0, "motion": 0}
    for i in range(count):
        scene = W.sample_scene(rng, ("train", "heldout")[i % 2], num_objects=1)
        height, width, frames = buckets[rng.integers(len(buckets))]
        clip = W.draw(scene, frames, height, width)
        if sigma:
            clip = _blur_and_noise(clip, sigma, noise, rng)
        verdict = J.agreement(J.scene_facts(scene), J.judge_clip(clip))
        for key, ok in verdict.items():
            hits[key] += ok
    return {key: n / count for key, n in hits.items()}


def test_judge_recovers_the_facts_of_clean_clips():
    accuracy = _judge_accuracy(300, seed=8)
    assert min(accuracy.values()) >= 0.99, accuracy


def test_judge_mostly_recovers_the_facts_of_blurred_noisy_clips():
    # sigma = 1 px blur and noise of 8 levels: measured ~0.99 or better on every attribute.
    accuracy = _judge_accuracy(150, seed=9, sigma=1.0, noise=8.0)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_judge_reads_each_motion_of_a_fixed_object():
    for motion in W.MOTIONS:
        scene = W.Scene("white", [W.ObjectSpec("square", "blue", motion, "slow", size=0.12, angle=0.3)])
        verdict = J.judge_clip(W.draw(scene, 17, 64, 64))
        assert (verdict.background, verdict.color, verdict.shape) == ("white", "blue", "square")
        assert verdict.motion == motion, (motion, verdict)


def test_judge_on_an_empty_clip_finds_no_object():
    clip = np.zeros((9, 48, 64, 3), np.uint8)
    clip[:] = W.COLORS["gray"]
    verdict = J.judge_clip(clip)
    assert verdict.background == "gray" and verdict.color is None and verdict.shape is None
    assert verdict.motion == "still"
    with pytest.raises(ValueError):
        J.judge_clip(clip[0])
