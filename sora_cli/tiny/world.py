"""A procedural, captioned video world for training and evaluating the embedded tiny model.

Geometry is measured in "units" where the frame's shorter side is 1.0, and speeds in units
per second, so one scene renders with the same composition and pace at any resolution,
aspect ratio, duration or frame rate. Everything is deterministic given a numpy Generator.
Captions come from many templates and synonyms; some combinations and some phrasings are
held out from training so evaluation can measure generalisation.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..shapes import size_for_area

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "orange": (255, 165, 0), "yellow": (255, 255, 0),
    "green": (0, 128, 0), "lime": (0, 255, 0), "cyan": (0, 255, 255),
    "blue": (0, 0, 255), "purple": (128, 0, 128), "magenta": (255, 0, 255),
    "pink": (255, 192, 203), "white": (255, 255, 255), "gray": (128, 128, 128),
    "black": (0, 0, 0),
}
OBJECT_COLORS: tuple[str, ...] = tuple(COLORS)
BACKGROUNDS: tuple[str, ...] = ("black", "white", "gray", "blue", "green")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
# Unit vectors with y pointing down, as in image rows.
_D = 1.0 / math.sqrt(2.0)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up-left": (-_D, -_D), "up-right": (_D, -_D), "down-left": (-_D, _D), "down-right": (_D, _D),
}
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "bounce", "grow", "shrink", "spin", "still")
SPEEDS: tuple[str, ...] = ("slow", "fast")

FPS = 8.0
ASPECTS: tuple[tuple[int, int], ...] = ((1, 1), (16, 9), (9, 16), (4, 3), (3, 4))  # (w, h)
PIXEL_BUDGETS: tuple[int, ...] = (64 * 64, 96 * 96)
DURATIONS: tuple[int, ...] = (9, 17, 33)  # 4n+1 frames, as temporal VAEs expect

# Paces chosen so the slowest motion still travels several pixels in the shortest clip,
# while the fastest straight path of a 33-frame clip (4 s) still fits inside the frame.
LINEAR_SPEED = {"slow": 0.08, "fast": 0.14}  # units / s
BOUNCE_SPEED = {"slow": 0.3, "fast": 0.5}  # units / s, fast enough to reach a wall
GROWTH_RATE = {"slow": 0.3, "fast": 0.5}  # log size / s: growth reads as relative change
SPIN_RATE = {"slow": math.pi / 4, "fast": 2 * math.pi / 3}  # rad / s
MIN_SIZE, MAX_SIZE = 0.05, 0.28
MARGIN = 0.03  # keeps anti-aliased edges off the frame border (over a pixel at 48 px)
HELDOUT_MODULUS = 10  # one combination in ten is held out from training

# Shape outlines in multiples of the nominal size, tuned for roughly equal visual area.
# Polygons: (symmetry order n, tip radius, inner radius, angle of the first tip).
_POLYGONS: dict[str, tuple[int, float, float, float]] = {
    "square": (4, 0.88 * math.sqrt(2.0), 0.88, math.pi / 4),
    "triangle": (3, 1.35, 1.35 * 0.5, -math.pi / 2),
    "star": (5, 1.45, 0.65, -math.pi / 2),
}
_DIAMOND = (0.85, 1.5)  # half-width and half-height: a tall rhombus, unlike a turned square


def legible(a: str, b: str) -> bool:
    """Whether colour `a` reads clearly against colour `b` (RGB distance and luminance)."""
    ca, cb = np.array(COLORS[a], float), np.array(COLORS[b], float)
    lum = [_luminance(ca), _luminance(cb)]
    ratio = (max(lum) + 0.05) / (min(lum) + 0.05)
    # The luminance test drops pairs like yellow-on-white that are far apart in RGB but
    # wash out for a human viewer (and for a VAE trained on perceptual reconstruction).
    return bool(np.linalg.norm(ca - cb) >= 120.0 and ratio >= 1.15)


def _luminance(rgb: np.ndarray) -> float:
    c = rgb / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ np.array([0.2126, 0.7152, 0.0722]))


@dataclass
class ObjectSpec:
    shape: str
    color: str
    motion: str
    speed: str = "slow"
    size: float = 0.12  # nominal radius in units (a circle's radius)
    angle: float = 0.0  # starting rotation in radians, clockwise on screen
    x: float = 0.5  # placement within the free horizontal range, 0..1
    y: float = 0.5  # placement within the free vertical range, 0..1
    heading: float = math.pi / 4  # bounce direction in radians (y down)
    phase: float = 0.5  # where in the clip the first bounce lands, 0..1
    spin: float = 1.0  # +1 clockwise, -1 counter-clockwise


@dataclass
class Scene:
    background: str
    objects: list[ObjectSpec]


def bounding_radius(shape: str, size: float) -> float:
    """Radius of the circle around the shape's centre that contains the whole outline."""
    if shape == "circle":
        return size
    if shape == "diamond":
        return size * max(_DIAMOND)
    return size * _POLYGONS[shape][1]


# ---------------------------------------------------------------- combinations and split


def combo_is_heldout(shape: str, color: str, background: str, motion: str) -> bool:
    # crc32 rather than hash(): the split must not change between Python processes.
    key = f"{shape}|{color}|{background}|{motion}".encode()
    return zlib.crc32(key) % HELDOUT_MODULUS == 0


@lru_cache(maxsize=None)
def combinations(split: str) -> tuple[tuple[str, str, str, str], ...]:
    """All valid (shape, colour, background, motion) combinations of a split."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    out = []
    for bg in BACKGROUNDS:
        for shape in SHAPES:
            for color in OBJECT_COLORS:
                if not legible(color, bg):
                    continue
                for motion in MOTIONS:
                    if shape == "circle" and motion == "spin":
                        continue  # a spinning disc looks exactly like a still one
                    if combo_is_heldout(shape, color, bg, motion) == (split == "heldout"):
                        out.append((shape, color, bg, motion))
    return tuple(out)


@lru_cache(maxsize=None)
def _combos_by_background(split: str) -> dict[str, tuple[tuple[str, str, str, str], ...]]:
    return {bg: tuple(c for c in combinations(split) if c[2] == bg) for bg in BACKGROUNDS}


def sample_scene(rng: np.random.Generator, split: str = "train", num_objects: int | None = None) -> Scene:
    """A random scene; in the held-out split the first object is a held-out combination.

    The second object (if any) always comes from training combinations, so a held-out
    scene tests exactly one novel composition.
    """
    n = num_objects if num_objects is not None else (1 if rng.random() < 0.7 else 2)
    if n not in (1, 2):
        raise ValueError("scenes hold one or two objects")
    bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    objects: list[ObjectSpec] = []
    while len(objects) < n:
        pool = _combos_by_background(split if not objects else "train")[bg]
        shape, color, _, motion = pool[rng.integers(len(pool))]
        if objects and (color == objects[0].color or not legible(color, objects[0].color)):
            continue
        objects.append(_sample_object(rng, shape, color, motion, n))
    return Scene(background=bg, objects=objects)


def _sample_object(rng: np.random.Generator, shape: str, color: str, motion: str, n: int) -> ObjectSpec:
    speed = SPEEDS[rng.integers(2)]
    scale = 0.75 if n == 2 else 1.0  # two objects share the frame
    if motion == "grow":
        size = rng.uniform(0.05, 0.09)
    elif motion == "shrink":
        size = rng.uniform(0.15, 0.24) * scale
    else:
        size = rng.uniform(0.10, 0.15) * scale
    if motion in DIRECTIONS:  # small enough that the longest clip's path fits a square frame
        travel = LINEAR_SPEED[speed] * max(map(abs, DIRECTIONS[motion])) * (max(DURATIONS) - 1) / FPS
        size = min(size, ((1.0 - travel) / 2 - MARGIN) / bounding_radius(shape, 1.0))
    if motion == "spin":
        angle = rng.uniform(0.0, 2 * math.pi)
    else:  # near the upright pose people picture for "a square", "a triangle"
        angle = rng.uniform(-0.3, 0.3)
    # Bounce headings avoid the axes so the object visibly travels in both directions.
    heading = rng.uniform(math.radians(25), math.radians(65)) + (math.pi / 2) * rng.integers(4)
    return ObjectSpec(
        shape=shape, color=color, motion=motion, speed=speed,
        size=float(size), angle=float(angle), x=float(rng.random()), y=float(rng.random()),
        heading=float(heading), phase=float(rng.random()), spin=float(rng.choice([-1.0, 1.0])),
    )


# ---------------------------------------------------------------- trajectories

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in units


def lanes(num_objects: int, width_units: float, height_units: float) -> list[Box]:
    """Two objects get one half of the frame each, split along its longer side."""
    full = (0.0, 0.0, width_units, height_units)
    if num_objects == 1:
        return [full]
    if width_units >= height_units:
        cuts = np.linspace(0.0, width_units, num_objects + 1)
        return [(cuts[i], 0.0, cuts[i + 1], height_units) for i in range(num_objects)]
    cuts = np.linspace(0.0, height_units, num_objects + 1)
    return [(0.0, cuts[i], width_units, cuts[i + 1]) for i in range(num_objects)]


def trajectory(obj: ObjectSpec, num_frames: int, fps: float, lane: Box,
               frame: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centres (T, 2) in units, nominal sizes (T,) and angles (T,) of an object."""
    if num_frames < 1 or fps <= 0:
        raise ValueError("num_frames and fps must be positive")
    t = np.arange(num_frames, dtype=np.float64) / fps
    duration = float(t[-1])
    # Growth is capped by the lane so a growing object cannot outgrow its half of the frame.
    lane_side = min(lane[2] - lane[0], lane[3] - lane[1])
    cap = min(MAX_SIZE, (lane_side / 2 - MARGIN) / bounding_radius(obj.shape, 1.0))
    cap = max(cap, MIN_SIZE)
    if obj.motion in ("grow", "shrink"):
        rate = GROWTH_RATE[obj.speed] * (1 if obj.motion == "grow" else -1)
        # Start where the whole change fits between the size limits; in a clip too long
        # for that the object starts at one limit and settles at the other.
        if rate > 0:
            start = max(min(obj.size, cap * math.exp(-rate * duration)), MIN_SIZE)
        else:
            start = min(max(obj.size, MIN_SIZE * math.exp(-rate * duration)), cap)
        sizes = np.clip(start * np.exp(rate * t), MIN_SIZE, max(cap, start))
    else:
        sizes = np.full(num_frames, min(obj.size, cap))
    reach = bounding_radius(obj.shape, float(sizes.max())) + MARGIN

    centres = np.empty((num_frames, 2))
    if obj.motion == "bounce":
        v = BOUNCE_SPEED[obj.speed]
        vel = (v * math.cos(obj.heading), v * math.sin(obj.heading))
        major = int(abs(vel[1]) > abs(vel[0]))
        for a in (0, 1):
            lo, hi = _free_range(lane, frame, a, reach, 0.0)
            if a == major:  # time the first wall hit to land inside the clip
                hit = (0.3 + 0.4 * obj.phase) * duration
                p0 = hi - vel[a] * hit if vel[a] > 0 else lo - vel[a] * hit
            else:
                p0 = lo + (obj.x, obj.y)[a] * (hi - lo)
            centres[:, a] = _fold(p0 + vel[a] * t, lo, hi)
    else:
        unit = DIRECTIONS.get(obj.motion, (0.0, 0.0))
        v = LINEAR_SPEED[obj.speed]
        for a in (0, 1):
            travel = unit[a] * v * duration
            lo, hi = _free_range(lane, frame, a, reach, abs(travel))
            slack = max(hi - lo - abs(travel), 0.0)
            begin = lo + (obj.x, obj.y)[a] * slack
            centres[:, a] = (begin if travel >= 0 else begin + abs(travel)) + unit[a] * v * t
    angles = obj.angle + (obj.spin * SPIN_RATE[obj.speed] * t if obj.motion == "spin" else np.zeros_like(t))
    return centres, sizes, angles


def _free_range(lane: Box, frame: Box, axis: int, reach: float, travel: float) -> tuple[float, float]:
    """Range of centre positions along an axis that keeps the object (and its path) in view."""
    lo, hi = lane[axis] + reach, lane[axis + 2] - reach
    if hi - lo >= travel:
        return lo, hi
    # The path does not fit in the lane: centre it on the lane, but never past the frame.
    flo, fhi = frame[axis] + reach, frame[axis + 2] - reach
    if fhi - flo < travel:
        mid = (flo + fhi) / 2
        return mid - travel / 2, mid + travel / 2
    start = min(max((lo + hi) / 2 - travel / 2, flo), fhi - travel)
    return start, start + travel


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect an unbounded straight path back and forth between two walls."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, (lo + hi) / 2)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


# ---------------------------------------------------------------- rendering


def draw(scene: Scene, num_frames: int, height: int, width: int, fps: float = FPS) -> np.ndarray:
    """Draw a scene as a (num_frames, height, width, 3) uint8 clip with anti-aliased edges."""
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError("num_frames, height and width must be positive")
    px = 1.0 / min(height, width)
    frame: Box = (0.0, 0.0, width * px, height * px)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    out[:] = COLORS[scene.background]
    boxes = lanes(len(scene.objects), frame[2], frame[3])
    for obj, lane in zip(scene.objects, boxes):
        centres, sizes, angles = trajectory(obj, num_frames, fps, lane, frame)
        color = np.array(COLORS[obj.color], np.float32)
        # Shade one fixed-size window around the object per frame, all frames at once:
        # the few pixels near the object are all that change, which keeps a clip to ~ms.
        half = int(math.ceil(bounding_radius(obj.shape, float(sizes.max())) / px)) + 2
        span = np.arange(2 * half + 1)
        left = np.floor(centres[:, 0] / px).astype(int) - half
        top = np.floor(centres[:, 1] / px).astype(int) - half
        xs = ((left[:, None] + span + 0.5) * px - centres[:, :1]).astype(np.float32)
        ys = ((top[:, None] + span + 0.5) * px - centres[:, 1:]).astype(np.float32)
        cover = coverage(obj.shape, xs[:, None, :], ys[:, :, None], sizes[:, None, None].astype(np.float32),
                         angles[:, None, None].astype(np.float32), px)
        for i in range(num_frames):
            x0, y0 = max(left[i], 0), max(top[i], 0)
            x1, y1 = min(left[i] + span.size, width), min(top[i] + span.size, height)
            if x0 < x1 and y0 < y1:
                c = cover[i, y0 - top[i]:y1 - top[i], x0 - left[i]:x1 - left[i], None]
                patch = out[i, y0:y1, x0:x1].astype(np.float32)
                out[i, y0:y1, x0:x1] = patch + c * (color - patch) + 0.5
    return out


def coverage(shape: str, x: np.ndarray, y: np.ndarray, size: float | np.ndarray,
             angle: float | np.ndarray, pixel: float) -> np.ndarray:
    """Fraction of each pixel covered by the shape: a one-pixel linear ramp across the edge.

    x and y are pixel centres relative to the shape's centre, in units; size and angle
    broadcast against them, so many frames can be shaded in one call.
    """
    c, s = np.cos(angle), np.sin(angle)
    lx, ly = (c * x + s * y) / size, (c * y - s * x) / size
    distance = signed_distance(shape, lx, ly) * size
    return np.clip(0.5 - distance / pixel, 0.0, 1.0).astype(np.float32)


def signed_distance(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a unit-size shape centred at the origin."""
    if shape == "circle":
        return np.hypot(x, y) - 1.0
    # Fold the plane by the shape's mirror symmetries into one wedge: there the outline is
    # a single segment (a tip to the next inner corner), so the distance is exact.
    if shape == "diamond":
        return _edge_distance(np.abs(x), np.abs(y), (_DIAMOND[0], 0.0), (0.0, _DIAMOND[1]))
    n, tip, inner, first = _POLYGONS[shape]
    wedge = math.pi / n
    phi = np.mod(np.arctan2(y, x) - first, 2 * wedge)
    phi = wedge - np.abs(phi - wedge)
    rho = np.hypot(x, y)
    corner = (inner * math.cos(wedge), inner * math.sin(wedge))
    return _edge_distance(rho * np.cos(phi), rho * np.sin(phi), (tip, 0.0), corner)


def _edge_distance(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Signed distance to segment a-b, negative on the side of the origin."""
    qx, qy = x - a[0], y - a[1]
    ex, ey = b[0] - a[0], b[1] - a[1]
    h = np.clip((qx * ex + qy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.hypot(qx - h * ex, qy - h * ey)
    return np.where(ex * qy - ey * qx > 0, -dist, dist)


# ---------------------------------------------------------------- sizes


@lru_cache(maxsize=None)  # training asks for the buckets once per clip
def bucket_size(aspect_w: int, aspect_h: int, area: int, multiple: int = 16) -> tuple[int, int]:
    """(height, width), multiples of `multiple`, closest to an aspect ratio and pixel area."""
    width, height = size_for_area(aspect_w / aspect_h, area, multiple)
    return height, width


def buckets() -> list[tuple[int, int, int]]:
    """Training buckets as (height, width, num_frames)."""
    sizes = sorted({bucket_size(w, h, area) for area in PIXEL_BUDGETS for (w, h) in ASPECTS})
    return [(h, w, t) for (h, w) in sizes for t in DURATIONS]
