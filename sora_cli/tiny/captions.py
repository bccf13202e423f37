"""Captions for the synthetic world: many templates and synonyms, with held-out phrasings for evaluation.
"""

from __future__ import annotations

import numpy as np

from .world import DIRECTIONS, ObjectSpec, Scene

# Every vocabulary entry is (training phrasings, held-out phrasings). Training captions
# only ever use the first group; held-out captions use a held-out template and draw each
# slot from the held-out group half of the time.

Pools = tuple[tuple, tuple]
SHAPE_WORDS: dict[str, Pools] = {
    "circle": (("circle", "ball", "disc"), ("disk", "dot")),
    "square": (("square", "box", "block"), ("tile",)),
    "triangle": (("triangle", "triangular shape"), ("three-sided shape",)),
    "star": (("star", "five-pointed star"), ("star shape",)),
    "diamond": (("diamond", "rhombus"), ("lozenge",)),
}
VERBS: Pools = (
    (("moving", "moves"), ("drifting", "drifts"), ("sliding", "slides"),
     ("travelling", "travels"), ("heading", "heads")),
    (("gliding", "glides"), ("cruising", "cruises")),
)
_SIDE = {"left": "left", "right": "right", "up": "top", "down": "bottom"}
_CORNER = {"up": ("top", "upper"), "down": ("bottom", "lower")}
DIRECTION_WORDS: dict[str, Pools] = {
    **{d: ((d, f"to the {d}", f"{d}ward"), (f"{d}wards", f"towards the {d} edge"))
       for d in ("left", "right")},
    **{d: ((d, f"{d}ward", f"toward the {_SIDE[d]}"), (f"{d}wards", f"towards the {_SIDE[d]} edge"))
       for d in ("up", "down")},
    **{f"{v}-{h}": ((f"{v} and to the {h}", f"diagonally {v}-{h}", f"toward the {_CORNER[v][0]} {h}"),
                    (f"towards the {_CORNER[v][1]} {h} corner", f"diagonally {v}wards and {h}wards"))
       for v in ("up", "down") for h in ("left", "right")},
}
VERTICAL_VERBS: dict[str, Pools] = {  # a whole motion phrase on their own: "a ball rising"
    "up": ((("rising", "rises"),), (("climbing", "climbs"),)),
    "down": ((("falling", "falls"), ("sinking", "sinks")), (("descending", "descends"),)),
}
MOTION_PHRASES: dict[str, Pools] = {
    "bounce": ((("bouncing around", "bounces around"), ("bouncing off the edges", "bounces off the edges"),
                ("bouncing off the walls", "bounces off the walls")),
               (("ricocheting around the frame", "ricochets around the frame"),
                ("rebounding off the borders", "rebounds off the borders"))),
    "grow": ((("growing", "grows"), ("getting bigger", "gets bigger"), ("expanding", "expands"),
              ("growing larger", "grows larger")),
             (("swelling", "swells"), ("increasing in size", "increases in size"))),
    "shrink": ((("shrinking", "shrinks"), ("getting smaller", "gets smaller"), ("contracting", "contracts")),
               (("dwindling", "dwindles"), ("decreasing in size", "decreases in size"))),
    "spin": ((("spinning", "spins"), ("rotating", "rotates"), ("turning in place", "turns in place")),
             (("twirling", "twirls"), ("whirling around", "whirls around"))),
    "still": ((("staying still", "stays still"), ("sitting still", "sits still"),
               ("not moving", "does not move"), ("resting motionless", "rests motionless")),
              (("remaining stationary", "remains stationary"), ("holding perfectly still", "holds perfectly still"))),
}
SPEED_WORDS: dict[str, Pools] = {
    "slow": (("slowly", "gently", "lazily"), ("leisurely", "unhurriedly")),
    "fast": (("quickly", "rapidly", "fast"), ("swiftly", "speedily")),
}
BACKGROUND_PHRASES: Pools = (
    ("on a {c} background", "against a {c} background", "against {c}", "on {c}",
     "over a {c} backdrop", "on a plain {c} background"),
    ("in front of a {c} wall", "on a solid {c} canvas"),
)
BACKGROUND_NOUNS: Pools = (("a {c} background", "a plain {c} backdrop"), ("a {c} canvas",))
TEMPLATES: dict[str, dict[int, tuple[str, ...]]] = {
    "train": {
        1: ("{obj1} {ing1} {bg}", "{bg}, {obj1} {s1}", "{obj1} {s1} {bg}",
            "a video of {obj1} {ing1} {bg}", "{bgnoun} with {obj1} {ing1}", "{obj1} {bg}, {ing1}"),
        2: ("{obj1} {ing1} and {obj2} {ing2} {bg}", "{bg}, {obj1} {s1} and {obj2} {s2}",
            "{obj1} and {obj2} {bg}; the {ref1} {s1} and the {ref2} {s2}"),
    },
    "heldout": {
        1: ("there is {obj1} {ing1} {bg}", "{bg}, there is {obj1} that {s1}",
            "a clip showing {obj1} {ing1} {bg}"),
        2: ("there is {obj1} {ing1} and {obj2} {ing2} {bg}",
            "{bg}: {obj1} that {s1}, together with {obj2} that {s2}"),
    },
}
SPEED_MENTION_RATE = 0.8  # some captions leave the pace unsaid, as users often do


def caption(scene: Scene, rng: np.random.Generator, split: str = "train") -> str:
    """A caption of the scene phrased with the split's templates and synonyms."""
    pick = _Picker(rng, split)
    slots = {"bg": pick(BACKGROUND_PHRASES).format(c=_color_word(scene.background, rng)),
             "bgnoun": pick(BACKGROUND_NOUNS).format(c=_color_word(scene.background, rng))}
    for k, obj in enumerate(scene.objects, start=1):
        ref = f"{_color_word(obj.color, rng)} {pick(SHAPE_WORDS[obj.shape])}"
        ing, s = _motion_phrase(obj, pick)
        article = "an" if ref[0] in "aeiou" else "a"
        slots.update({f"obj{k}": f"{article} {ref}", f"ref{k}": ref, f"ing{k}": ing, f"s{k}": s})
    templates = TEMPLATES[split][len(scene.objects)]
    text = templates[rng.integers(len(templates))].format(**slots)
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    return text + "." if rng.random() < 0.5 else text


class _Picker:
    """Draws one phrasing from a (train, held-out) pool as the split allows."""

    def __init__(self, rng: np.random.Generator, split: str) -> None:
        if split not in TEMPLATES:
            raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
        self.rng, self.split = rng, split

    def __call__(self, pools: Pools):
        train, heldout = pools
        choices = heldout if self.split == "heldout" and heldout and self.rng.random() < 0.5 else train
        return choices[self.rng.integers(len(choices))]


def _color_word(color: str, rng: np.random.Generator) -> str:
    return ("gray", "grey")[rng.integers(2)] if color == "gray" else color


def _motion_phrase(obj: ObjectSpec, pick: _Picker) -> tuple[str, str]:
    """(participle form, finite form), e.g. ("drifting left", "drifts left")."""
    if obj.motion in VERTICAL_VERBS and pick.rng.random() < 0.25:
        ing, s = pick(VERTICAL_VERBS[obj.motion])
    elif obj.motion in DIRECTIONS:
        (ing, s), where = pick(VERBS), pick(DIRECTION_WORDS[obj.motion])
        ing, s = f"{ing} {where}", f"{s} {where}"
    else:
        ing, s = pick(MOTION_PHRASES[obj.motion])
    if obj.motion == "still" or pick.rng.random() >= SPEED_MENTION_RATE:
        return ing, s
    adverb = pick(SPEED_WORDS[obj.speed])
    if adverb.endswith("ly") and pick.rng.random() < 0.5:
        return f"{adverb} {ing}", f"{adverb} {s}"
    return f"{ing} {adverb}", f"{s} {adverb}"
