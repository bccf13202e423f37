"""Evaluation in the vocabulary of `sora_cli.tiny.world`: what a caption says, what a clip shows.

`parse_caption` turns any caption wording into facts (background; colour, shape, motion
and pace of each object). `judge_clip` measures the same facts from decoded frames alone,
so a generated clip can be scored against its prompt with `agreement`. The frame judge
uses soft, area-weighted statistics (never single pixels) so that blur and noise in a
model's output move its answers as little as possible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .world import COLORS, DIRECTIONS, FPS, Scene

# ---------------------------------------------------------------- what the frames show

_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[n] for n in _NAMES], np.float32)

# Thresholds in world units (the frame's shorter side is 1.0). The world's slowest straight
# motion covers 0.08 in its shortest clip and a bounce's legs at least 0.06, so half of
# that separates motion from jitter; growth changes the area by at least ~1.4x.
STILL_TRAVEL = 0.04
BOUNCE_EXCURSION = 0.03
AREA_TREND = 1.3
SPIN_DEGREES = 20.0
MIN_AREA_PIXELS = 3.0

# Rotation-invariant outline signature: |c_k|, the k-th angular harmonic of the object's
# area around its centroid, normalised by the area. A disc has none; an n-fold symmetric
# outline has them only at multiples of n: diamond 2, triangle 3, square 4, star 5.
# Measured on clean renders (median): diamond 0.24, triangle 0.28, square 0.14, star 0.32;
# blur lowers them, a disc stays under 0.04. Below HARMONIC_ROUND the object is a disc.
HARMONIC_ROUND = 0.05
_ORDER = {"diamond": 2, "triangle": 3, "square": 4, "star": 5}


@dataclass
class Judgement:
    background: str
    color: str | None  # None when no object could be found
    shape: str | None
    motion: str  # one of world.MOTIONS
    displacement: tuple[float, float]  # net centroid travel in units, x right and y down
    area_ratio: float  # end / start area along the fitted trend
    rotation: float  # degrees turned over the clip, clockwise positive
    harmonics: tuple[float, float, float, float]  # |c_2| .. |c_5|, for diagnostics


def nearest_color(rgb: np.ndarray) -> str:
    """The named colour closest to an RGB triple (0..255) in Euclidean distance."""
    return _NAMES[int(np.argmin(np.linalg.norm(_PALETTE - np.asarray(rgb, np.float32), axis=1)))]


def judge_clip(frames: np.ndarray, fps: float = FPS) -> Judgement:
    """Measure a (T, H, W, 3) clip of one object on a plain background (uint8 or 0..255)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got {frames.shape}")
    clip = np.asarray(frames, np.float32)
    num_frames, height, width, _ = clip.shape
    bg, obj_rgb, found = _locate(clip)
    nothing = Judgement(nearest_color(bg), None, None, "still", (0.0, 0.0), 1.0, 0.0, (0.0,) * 4)
    if found is None:
        return nothing
    f, y, x, w, area, cx, cy = found
    visible = area >= MIN_AREA_PIXELS
    unit = 1.0 / min(height, width)
    safe = np.maximum(area, 1e-9)
    dx, dy = x + 0.5 - cx[f], y + 0.5 - cy[f]
    # exp(-i theta) around each frame's centroid; its powers give the angular harmonics.
    z = (dx - 1j * dy) / np.maximum(np.hypot(dx, dy), 1e-9)
    harmonics = np.zeros((num_frames, 6), np.complex128)  # k = 0..5
    for k in range(2, 6):
        zk = w * z**k
        harmonics[:, k] = np.bincount(f, zk.real, num_frames) + 1j * np.bincount(f, zk.imag, num_frames)
    harmonics /= safe[:, None]

    # Outlines are read where the object is largest: small frames of a growing or shrinking
    # object are the most pixelated and the most blurred relative to their size.
    large = area >= 0.5 * area.max()
    h = np.median(np.abs(harmonics[large]), axis=0)
    shape = _shape_from(h)
    t = np.arange(num_frames)[visible] / fps
    centres = np.stack([cx[visible], cy[visible]], axis=1) * unit
    rotation = _rotation(harmonics[visible, _ORDER.get(shape, 4)], t, _ORDER.get(shape, 4))
    motion, displacement, ratio = _motion(t, centres, area[visible], rotation, shape)
    return Judgement(
        background=nearest_color(bg), color=nearest_color(obj_rgb), shape=shape, motion=motion,
        displacement=displacement, area_ratio=ratio, rotation=rotation,
        harmonics=(float(h[2]), float(h[3]), float(h[4]), float(h[5])),
    )


def centroids(frames: np.ndarray) -> np.ndarray:
    """(T, 2) the object's centroid in each frame, in units (x right, y down); NaN where it does not show."""
    clip = np.asarray(frames, np.float32)
    out = np.full((len(clip), 2), np.nan)
    _, _, found = _locate(clip)
    if found is not None:
        *_, area, cx, cy = found
        visible = area >= MIN_AREA_PIXELS
        out[visible] = np.stack([cx, cy], axis=1)[visible] / min(clip.shape[1:3])
    return out


def _locate(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Background and object colours, and the object's weighted pixels (frame, y, x, weight) with its area and
    centroid (pixels) per frame; None for the pixels when no object shows in any frame."""
    num_frames = len(clip)
    # The border is almost always background, even when the object brushes an edge.
    edges = (clip[:, 0], clip[:, -1], clip[:, :, 0], clip[:, :, -1])
    border = np.concatenate([e.reshape(-1, 3) for e in edges])
    bg = np.median(border, axis=0)
    weight, obj_rgb = _object_weight(clip, bg)
    if weight is None:
        return bg, obj_rgb, None
    # Work on the few pixels that carry weight: the clip is mostly background.
    f, y, x = np.nonzero(weight)
    w = weight[f, y, x].astype(np.float64)
    area = np.bincount(f, w, num_frames)
    if not (area >= MIN_AREA_PIXELS).any():
        return bg, obj_rgb, None
    safe = np.maximum(area, 1e-9)
    cx = np.bincount(f, w * (x + 0.5), num_frames) / safe
    cy = np.bincount(f, w * (y + 0.5), num_frames) / safe
    return bg, obj_rgb, (f, y, x, w, area, cx, cy)


def _object_weight(clip: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-pixel object coverage in [0, 1] and the object's colour, from colour unmixing."""
    diff = clip - bg
    dist = np.linalg.norm(diff, axis=-1)
    # The object covers at least ~0.3% of a clip's pixels, so this is its core, not noise.
    peak = float(np.percentile(dist, 99.9))
    noise = float(np.median(np.abs(dist - np.median(dist)))) * 1.4826 + 1.0
    if peak < max(40.0, 6 * noise):
        return None, bg
    core = dist >= 0.8 * peak
    obj_rgb = np.median(clip[core], axis=0)
    axis = obj_rgb - bg
    # Each pixel is read as a mix of background and object; its share is the coverage.
    share = np.clip((diff @ axis) / float(axis @ axis), 0.0, 1.0)
    # Only pixels near the object count, so background noise cannot pile up into area.
    near = _dilate(share > 0.5, 2)
    return share * near, obj_rgb


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (T, H, W) masks by a square of side 2 * radius + 1."""
    out = mask.copy()
    for axis in (1, 2):
        grown = out.copy()
        for shift in range(1, radius + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def _shape_from(h: np.ndarray) -> str:
    order = 2 + int(np.argmax(h[2:6]))
    if h[order] < HARMONIC_ROUND:
        return "circle"
    return next(shape for shape, k in _ORDER.items() if k == order)


def _rotation(c: np.ndarray, t: np.ndarray, order: int) -> float:
    """Degrees turned: a turn by `a` multiplies c_k by exp(-i k a), so track its phase."""
    if len(t) < 2 or t[-1] <= t[0] or np.median(np.abs(c)) < HARMONIC_ROUND:
        return 0.0
    phase = np.unwrap(np.angle(c))
    slope = np.polyfit(t, phase, 1)[0]
    return float(-math.degrees(slope * (t[-1] - t[0])) / order)


def _motion(t: np.ndarray, centres: np.ndarray, area: np.ndarray, rotation: float,
            shape: str) -> tuple[str, tuple[float, float], float]:
    if len(t) < 2 or t[-1] <= t[0]:
        return "still", (0.0, 0.0), 1.0
    duration = t[-1] - t[0]
    ratio = float(math.exp(np.polyfit(t, np.log(area), 1)[0] * duration))
    velocity = np.polyfit(t, centres, 1)[0]
    travel = (float(velocity[0] * duration), float(velocity[1] * duration))
    if ratio >= AREA_TREND:
        return "grow", travel, ratio
    if ratio <= 1 / AREA_TREND:
        return "shrink", travel, ratio
    # A bounce turns back: the track goes past both of its ends along some axis.
    for track in centres.T:
        beyond = max(min(track.max() - track[0], track.max() - track[-1]),
                     min(track[0] - track.min(), track[-1] - track.min()))
        if beyond > BOUNCE_EXCURSION:
            return "bounce", travel, ratio
    if math.hypot(*travel) < STILL_TRAVEL:
        spinning = shape != "circle" and abs(rotation) >= SPIN_DEGREES
        return ("spin" if spinning else "still"), travel, ratio
    angle = math.atan2(travel[1], travel[0])
    best = max(DIRECTIONS, key=lambda d: math.cos(angle - math.atan2(DIRECTIONS[d][1], DIRECTIONS[d][0])))
    return best, travel, ratio


def agreement(facts: Facts, judgement: Judgement) -> dict[str, bool]:
    """Which of a one-object caption's facts the clip shows."""
    obj = facts.objects[0] if facts.objects else ObjectFacts("", "", None, None)
    return {
        "background": judgement.background == facts.background,
        "color": judgement.color == obj.color,
        "shape": judgement.shape == obj.shape,
        "motion": judgement.motion == obj.motion,
    }


# ---------------------------------------------------------------- what the caption says


@dataclass(frozen=True)
class ObjectFacts:
    color: str
    shape: str
    motion: str | None
    speed: str | None  # None when the caption does not say (always for "still")


@dataclass(frozen=True)
class Facts:
    background: str | None
    objects: tuple[ObjectFacts, ...]


def scene_facts(scene: Scene) -> Facts:
    """What a caption of this scene asserts (the pace of a still object is meaningless)."""
    objs = tuple(ObjectFacts(o.color, o.shape, o.motion, None if o.motion == "still" else o.speed)
                 for o in scene.objects)
    return Facts(scene.background, objs)


_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|[,;:.!?]")
_COLOR_WORDS = {**{c: c for c in COLORS}, "grey": "gray"}
_SHAPE_KEYS = {word: shape for shape, words in {  # the word right after the colour names the shape
    "circle": ("circle", "ball", "disc", "disk", "dot"), "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "triangular", "three-sided"), "star": ("star", "five-pointed"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}.items() for word in words}
_GLUE = {"a", "an", "the", "and", "with", "that", "on", "in", "of", "against", "over", "to", "is"}
_KEYWORDS = {  # motion -> word prefixes, checked in this order
    "still": ("still", "stationary", "motionless", "static", "unmoving"),
    "bounce": ("bounc", "ricochet", "rebound"),
    "spin": ("spin", "rotat", "twirl", "whirl", "turn"),
    "grow": ("grow", "expand", "swell", "bigger", "larger", "increas", "enlarg"),
    "shrink": ("shrink", "contract", "dwindl", "smaller", "decreas"),
}
_UP = ("up", "top", "upper", "rising", "rises", "climb", "ascend")
_DOWN = ("down", "bottom", "lower", "falling", "falls", "sink", "descend")
_SPEED_KEYS = {"slow": ("slow", "gentl", "lazil", "leisurel", "unhurried"),
               "fast": ("quick", "fast", "rapid", "swift", "speedil")}


def parse_caption(text: str) -> Facts:
    """Recover background and (colour, shape, motion, speed) facts from any caption wording."""
    tokens = _TOKEN.findall(text.lower())
    background: str | None = None
    mentions: list[tuple[int, int, str, str]] = []  # (first token, end token, colour, shape)
    for i, tok in enumerate(tokens):
        if tok not in _COLOR_WORDS:
            continue
        span = _shape_after(tokens, i)
        if span is None:
            background = background or _COLOR_WORDS[tok]
        else:
            mentions.append((i, span[0], _COLOR_WORDS[tok], span[1]))
    found: dict[tuple[str, str], list[str | None]] = {}
    for k, (_, end, color, shape) in enumerate(mentions):
        stop = mentions[k + 1][0] if k + 1 < len(mentions) else len(tokens)
        words = [w for tok in tokens[end:stop] for w in tok.split("-")]
        entry = found.setdefault((color, shape), [None, None])
        # An object can be named twice ("...; the red ball spins"): keep what is learnt.
        entry[0] = entry[0] or _motion_of(words)
        entry[1] = entry[1] or _speed_of(words)
    objects = tuple(ObjectFacts(c, s, m, None if m == "still" else v) for (c, s), (m, v) in found.items())
    return Facts(background, objects)


def _shape_after(tokens: list[str], i: int) -> tuple[int, str] | None:
    """(end index, shape) if the colour at `i` names an object, allowing one adjective."""
    for j in (i + 1, i + 2):
        if j < len(tokens) and tokens[j] in _SHAPE_KEYS:
            return j + 1, _SHAPE_KEYS[tokens[j]]
        if j >= len(tokens) or not tokens[j].isalpha() or tokens[j] in _GLUE or tokens[j] in _COLOR_WORDS:
            return None
    return None


def _motion_of(words: list[str]) -> str | None:
    text = " ".join(words)
    if "not moving" in text or "not move" in text:
        return "still"
    for motion, prefixes in _KEYWORDS.items():
        if any(w.startswith(prefixes) for w in words):
            return motion
    vertical = "up" if any(w.startswith(_UP) for w in words) else None
    vertical = "down" if any(w.startswith(_DOWN) for w in words) else vertical
    horizontal = next((h for h in ("left", "right") if any(w.startswith(h) for w in words)), None)
    if vertical and horizontal:
        return f"{vertical}-{horizontal}"
    return vertical or horizontal


def _speed_of(words: list[str]) -> str | None:
    for speed, prefixes in _SPEED_KEYS.items():
        if any(w.startswith(prefixes) for w in words):
            return speed
    return None
