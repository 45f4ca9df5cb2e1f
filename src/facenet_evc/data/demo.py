"""Generate the synthetic demo EVC dataset: small rendered videos, captions and a lexicon.

The machines this project is built on have no real videos, so the demo stands in for
EmVidCap end to end. Each video shows one coloured shape doing one action; its emotion is
carried only by *mixed, noisy mood cues* (brightness, colour tint, background contrast,
tempo, shaking, flicker, flashes, pulsing, a sudden "pop"), drawn around an
emotion-dependent profile so that no single cue separates the emotions. Captions come from
templates with synonyms and varied word order; like the real data, videos differ in how
emotional their captions are (a per-video bias class: emotional, neutral, factual).

Layout written under ``out_dir`` (same as the official release where one exists)::

    videos/vid<N>.mp4                        libx264, yuv420p
    captions/EmVideo_trainval_captions.csv   header ``VideoID,EmCaptions``, CRLF like the official files
    captions/EmVideo_test_captions.csv
    lexicon/<category>.txt                   copy of the package's demo lexicon
    scenes.json                              ground-truth scene, cues and per-caption emotion words

Everything is a pure function of the arguments: the same seed gives byte-identical CSVs,
scenes.json and (with the same FFmpeg build) videos.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import av
import numpy as np

from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.io import atomic_dir, read_json, write_json, write_text

GENERATOR = "facenet_evc.data.demo"
FORMAT_VERSION = 2  # 2: static mood cues at half the noise, 5% weak-cue videos (was 15%)
TRAINVAL_CSV = "EmVideo_trainval_captions.csv"
TEST_CSV = "EmVideo_test_captions.csv"

# --------------------------------------------------------------------------------------
# Vocabulary. Every emotion word here must be in the package lexicon (checked at run time
# and by the tests); no factual word may be a lexicon word, so counting lexicon hits in a
# caption counts exactly the emotion words that were put there.
# --------------------------------------------------------------------------------------

EMOTION_WORDS: dict[str, dict[str, list[str]]] = {
    # adj: usable attributively ("a sad blue square") and predicatively ("looks sad");
    # adv: manner adverbs; noun: used in the fixed phrase given by EMOTION_NOUN_PHRASES.
    "anger": {"adj": ["angry", "furious", "annoyed"], "adv": ["angrily", "furiously"], "noun": ["anger", "rage"]},
    "bore": {"adj": ["bored", "boring", "dull"], "adv": ["boringly"], "noun": ["boredom"]},
    "calm": {"adj": ["calm", "peaceful", "quiet", "serene"], "adv": ["calmly", "peacefully", "quietly"],
             "noun": ["peace"]},
    "disgust": {"adj": ["disgusted", "disgusting", "nasty"], "adv": ["disgustedly"], "noun": ["disgust"]},
    "fear": {"adj": ["fearful", "scared", "frightened", "worried"], "adv": ["fearfully"], "noun": ["fear"]},
    "joy": {"adj": ["happy", "joyful", "cheerful", "wonderful"], "adv": ["happily", "joyfully", "cheerfully"],
            "noun": ["joy"]},
    "love": {"adj": ["lovely", "loving", "adorable", "tender"], "adv": ["lovingly", "tenderly"], "noun": ["love"]},
    "sadness": {"adj": ["sad", "sorrowful", "gloomy", "unhappy"], "adv": ["sadly", "sorrowfully"],
                "noun": ["sadness"]},
    "surprise": {"adj": ["surprised", "astonished", "amazed", "wonderful"], "adv": ["surprisingly", "amazingly"],
                 "noun": ["surprise"]},
    "worry": {"adj": ["worried", "anxious", "nervous"], "adv": ["anxiously", "nervously"], "noun": ["worry"]},
}
EMOTION_NOUN_PHRASES = {
    "anger": "in", "rage": "with", "boredom": "in", "peace": "in", "disgust": "in", "fear": "in",
    "joy": "with", "love": "with", "sadness": "with", "surprise": "in", "worry": "with",
}
# A second emotion word sometimes comes from a neighbouring category, as annotators of the
# real data mix e.g. fear and worry; this gives multi-category references.
RELATED: dict[str, list[str]] = {
    "anger": ["disgust"], "bore": ["sadness", "calm"], "calm": ["love", "joy"], "disgust": ["anger"],
    "fear": ["worry", "surprise"], "joy": ["love", "surprise"], "love": ["joy", "calm"],
    "sadness": ["bore", "worry"], "surprise": ["joy", "fear"], "worry": ["fear", "sadness"],
}
EMOTIONS = sorted(EMOTION_WORDS)

COLOURS: dict[str, tuple[float, float, float]] = {
    # Saturated object colours: backgrounds are kept far less saturated so the object
    # stays separable by colour (the tests locate it that way).
    "red": (0.92, 0.10, 0.08),
    "blue": (0.12, 0.32, 0.96),
    "green": (0.10, 0.78, 0.18),
    "yellow": (0.98, 0.86, 0.06),
    "purple": (0.62, 0.14, 0.88),
}
COLOUR_WORDS = {
    "red": ["red", "crimson", "scarlet"], "blue": ["blue", "azure"], "green": ["green", "emerald", "lime"],
    "yellow": ["yellow", "golden"], "purple": ["purple", "violet"],
}
SHAPES = ["circle", "square", "triangle", "star", "cross"]
SHAPE_WORDS = {
    "circle": ["circle", "ball", "disc", "dot"], "square": ["square", "box", "block"],
    "triangle": ["triangle", "triangular shape"], "star": ["star", "star shape"], "cross": ["cross", "plus sign"],
}
GENERIC_NOUNS = ["shape", "object"]
# Rotational symmetry in degrees: a spin step must stay well under it to be visible.
SYMMETRY_DEG = {"circle": 0.0, "square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}

ACTIONS = ["moves_left", "moves_right", "falls", "rises", "bounces", "spins", "grows", "shrinks"]
ACTION_PHRASES: dict[str, list[tuple[str, str]]] = {  # (simple present, progressive)
    "moves_left": [("moves to the left", "is moving to the left"), ("moves left", "is moving left"),
                   ("slides to the left", "is sliding to the left"), ("drifts left", "is drifting left"),
                   ("goes to the left", "is going to the left"), ("travels leftward", "is travelling leftward")],
    "moves_right": [("moves to the right", "is moving to the right"), ("moves right", "is moving right"),
                    ("slides to the right", "is sliding to the right"), ("drifts right", "is drifting right"),
                    ("goes to the right", "is going to the right"),
                    ("travels rightward", "is travelling rightward")],
    "falls": [("falls down", "is falling down"), ("falls", "is falling"), ("drops down", "is dropping down"),
              ("sinks", "is sinking"), ("moves down", "is moving down")],
    "rises": [("rises", "is rising"), ("moves up", "is moving up"), ("floats upward", "is floating upward"),
              ("goes up", "is going up"), ("climbs up", "is climbing up")],
    "bounces": [("bounces", "is bouncing"), ("bounces up and down", "is bouncing up and down"),
                ("hops", "is hopping"), ("jumps up and down", "is jumping up and down")],
    "spins": [("spins", "is spinning"), ("rotates", "is rotating"), ("turns around", "is turning around"),
              ("spins in place", "is spinning in place"), ("twirls", "is twirling")],
    "grows": [("grows", "is growing"), ("gets bigger", "is getting bigger"), ("expands", "is expanding"),
              ("grows larger", "is growing larger"), ("swells up", "is swelling up")],
    "shrinks": [("shrinks", "is shrinking"), ("gets smaller", "is getting smaller"),
                ("contracts", "is contracting"), ("shrinks down", "is shrinking down")],
}
ROLL_PHRASES = {
    "moves_left": ("rolls to the left", "is rolling to the left"),
    "moves_right": ("rolls to the right", "is rolling to the right"),
}
SLOW_WORDS = ["slowly", "gradually", "gently"]
FAST_WORDS = ["quickly", "rapidly", "fast"]

BIAS_CLASSES = ["emotional", "neutral", "factual"]
# Share of a video's captions that carry emotion words, and of those the share with two.
# Most captions carry an emotion word, as in EmVidCap (measured with the official lexicon:
# 88% of EmVidCap-S and 72% of EmVidCap-L trainval captions; these shares give ~77%), while
# factual-bias videos have the fewest.
BIAS_SHARE = {"emotional": (0.9, 1.0), "neutral": (0.7, 0.9), "factual": (0.45, 0.65)}
BIAS_TWO_WORDS = {"emotional": 0.4, "neutral": 0.15, "factual": 0.0}

# --------------------------------------------------------------------------------------
# Mood cue profiles: the mean of each cue per emotion. Per-video values are drawn around
# them (CUE_NOISE), so single cues overlap between emotions and only the mixture is telling.
# --------------------------------------------------------------------------------------
_CUE_KEYS = ["brightness", "warmth", "green_tint", "saturation", "contrast", "tempo", "shake", "flicker",
             "flash_rate", "pulse", "pop"]
CUE_PROFILES: dict[str, dict[str, float]] = {
    #            bright warm  green  sat  contr tempo shake flick flash pulse pop
    "joy":      dict(zip(_CUE_KEYS, [0.72, 0.55, 0.00, 1.0, 0.50, 1.50, 0.0, 0.02, 0.3, 0.05, 0.0])),
    "sadness":  dict(zip(_CUE_KEYS, [0.28, -0.60, 0.00, 0.8, 0.25, 0.50, 0.0, 0.00, 0.0, 0.00, 0.0])),
    "anger":    dict(zip(_CUE_KEYS, [0.45, 0.80, -0.20, 1.0, 0.70, 1.30, 1.6, 0.05, 1.2, 0.00, 0.0])),
    "fear":     dict(zip(_CUE_KEYS, [0.20, -0.30, 0.10, 0.8, 0.50, 1.00, 0.9, 0.12, 0.4, 0.00, 0.0])),
    "calm":     dict(zip(_CUE_KEYS, [0.60, -0.10, 0.15, 0.7, 0.12, 0.50, 0.0, 0.00, 0.0, 0.00, 0.0])),
    "surprise": dict(zip(_CUE_KEYS, [0.55, 0.10, 0.00, 1.0, 0.45, 1.10, 0.2, 0.03, 0.8, 0.00, 1.0])),
    "disgust":  dict(zip(_CUE_KEYS, [0.40, 0.20, 0.60, 0.9, 0.45, 0.80, 0.4, 0.04, 0.0, 0.00, 0.0])),
    "love":     dict(zip(_CUE_KEYS, [0.65, 0.30, -0.60, 1.0, 0.30, 0.80, 0.0, 0.00, 0.0, 0.15, 0.0])),
    "worry":    dict(zip(_CUE_KEYS, [0.38, -0.20, 0.00, 0.8, 0.35, 0.90, 0.5, 0.06, 0.1, 0.00, 0.0])),
    "bore":     dict(zip(_CUE_KEYS, [0.45, 0.00, 0.00, 0.3, 0.08, 0.35, 0.0, 0.00, 0.0, 0.00, 0.0])),
}
NEUTRAL_CUES = dict(zip(_CUE_KEYS, [0.50, 0.00, 0.00, 0.8, 0.30, 1.00, 0.0, 0.00, 0.0, 0.00, 0.0]))
# Format 2: the per-frame (static) cues, brightness to contrast, carry half the noise of format 1,
# and 5% of the videos (15% before) have weak cues. Measured with a quadratic probe on the true
# cue values of 3,000 sampled scenes, the static cues alone separated the 10 emotions 66% of the
# time in format 1 (and a linear probe on the demo CLIP's frame features 58%, below copying the
# nearest caption's emotion), 91% now (frame-feature probe 85%). A trial that moved the mood into
# the temporal cues (flicker, flashes, shaking, pulsing: oscillations a pooled embedding averages
# away) left the frame features with too little of it (probe 45%): the demo CLIP, trained per
# frame, does not encode those oscillations, so neither retrieval nor FACE-net could read them.
CUE_NOISE = dict(zip(_CUE_KEYS, [0.05, 0.15, 0.10, 0.075, 0.06, 0.25, 0.35, 0.03, 0.0, 0.04, 0.0]))
WEAK_CUE_PROB = 0.05  # share of "neutral-ish" videos whose cues are pulled towards NEUTRAL_CUES
PATTERNS = ["plain", "stripes", "checker", "gradient", "radial", "blobs", "noise"]


def demo_lexicon_dir() -> Path:
    """Folder of the demo lexicon shipped as package data (``<category>.txt``)."""
    return Path(str(resources.files("facenet_evc").joinpath("demo_lexicon")))


# --------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------

def _balanced(rng: np.random.Generator, items: list[str], n: int) -> list[str]:
    # Tiling then shuffling guarantees every value appears once n >= len(items), which
    # small test datasets rely on (both directions of motion, every bias class).
    tiled = (items * (n // len(items) + 1))[:n]
    return [tiled[i] for i in rng.permutation(n)]


def _sample_cues(rng: np.random.Generator, emotion: str, n_frames: int) -> dict[str, Any]:
    profile = CUE_PROFILES[emotion]
    strength = 1.0 if rng.random() >= WEAK_CUE_PROB else float(rng.uniform(0.15, 0.4))
    cues: dict[str, Any] = {}
    for key in _CUE_KEYS:
        value = profile[key] + CUE_NOISE[key] * rng.standard_normal()
        if key == "tempo":
            value = profile[key] * math.exp(CUE_NOISE[key] * rng.standard_normal())
        value = NEUTRAL_CUES[key] + strength * (value - NEUTRAL_CUES[key])
        cues[key] = value
    cues["brightness"] = float(np.clip(cues["brightness"], 0.08, 0.9))
    cues["saturation"] = float(np.clip(cues["saturation"], 0.1, 1.2))
    cues["contrast"] = float(np.clip(cues["contrast"], 0.03, 0.9))
    cues["tempo"] = float(np.clip(cues["tempo"], 0.25, 2.2))
    cues["shake"] = float(max(0.0, cues["shake"]))
    cues["flicker"] = float(max(0.0, cues["flicker"]))
    cues["pulse"] = float(max(0.0, cues["pulse"]))
    n_flashes = int(rng.poisson(cues.pop("flash_rate")))
    flashes = sorted({int(f) for f in rng.integers(1, n_frames - 1, size=n_flashes)}) if n_flashes else []
    pop = cues.pop("pop") > 0.5
    cues["pop_frame"] = int(rng.integers(n_frames // 3, 2 * n_frames // 3 + 1)) if pop else None
    if cues["pop_frame"] is not None and cues["pop_frame"] not in flashes:
        flashes = sorted(flashes + [cues["pop_frame"]])  # a surprise pop comes with a flash
    cues["flashes"] = flashes
    cues["pattern"] = PATTERNS[int(rng.integers(len(PATTERNS)))]
    cues["strength"] = strength
    return cues


def _trajectory(rng: np.random.Generator, action: str, shape: str, cues: dict[str, Any], n: int, size: int
                ) -> np.ndarray:
    """Per-frame (cx, cy, radius, angle_deg) of the object, shape (n, 4), in pixels."""
    t = np.linspace(0.0, 1.0, n)  # (n,)
    tempo = cues["tempo"]
    radius = size * rng.uniform(0.11, 0.15)
    cx = np.full(n, size * rng.uniform(0.4, 0.6))
    cy = np.full(n, size * rng.uniform(0.4, 0.6))
    scale = np.ones(n)
    angle = np.full(n, rng.uniform(0, 360.0) if shape != "circle" else 0.0)
    # Travel grows with tempo but never drops below a quarter of the frame, so the
    # direction of motion stays visible even for the slowest (sad, bored) videos.
    travel = float(np.clip(size * 0.5 * tempo, size * 0.25, size * 0.6))
    if action in ("moves_left", "moves_right"):
        sign = -1.0 if action == "moves_left" else 1.0
        cx = size / 2 + sign * travel * (t - 0.5)
        cy = np.full(n, size * rng.uniform(0.3, 0.7))
    elif action in ("falls", "rises"):
        cx = np.full(n, size * rng.uniform(0.3, 0.7))
        if action == "falls":
            cy = size / 2 + travel * (t**1.6 - 0.5)  # accelerating, as under gravity
        else:
            cy = size / 2 - travel * (t - 0.5)
    elif action == "bounces":
        n_bounces = max(1, int(round(2 * tempo)))
        ground = size * 0.72
        height = size * rng.uniform(0.3, 0.4)
        cy = ground - height * np.abs(np.sin(math.pi * n_bounces * t))
        cx = size / 2 + size * rng.uniform(-0.1, 0.1) * (t - 0.5)
    elif action == "spins":
        sym = SYMMETRY_DEG[shape]
        step = min(12.0 * tempo, 0.3 * sym)  # degrees per frame, aliasing-free
        angle = angle + (1 if rng.random() < 0.5 else -1) * step * np.arange(n)
    elif action in ("grows", "shrinks"):
        lo, hi = 0.55, 0.55 + min(1.0, 0.6 + 0.3 * tempo)
        s = lo * (hi / lo) ** t
        scale = s if action == "grows" else s[::-1]
        radius = size * 0.12
    else:  # pragma: no cover - ACTIONS is closed
        raise ValueError(f"unknown action {action}")

    if cues["pulse"] > 0:
        scale = scale * (1 + cues["pulse"] * np.sin(2 * math.pi * 3 * t))
    if cues["pop_frame"] is not None:
        scale = scale * np.where(np.arange(n) >= cues["pop_frame"], 1.35, 1.0)
    if cues["shake"] > 0:
        jitter = rng.standard_normal((n, 2)) * cues["shake"] * size / 64
        cx = cx + jitter[:, 0]
        cy = cy + jitter[:, 1]
    r = radius * scale
    margin = r * 0.6
    cx = np.clip(cx, margin, size - margin)
    cy = np.clip(cy, margin, size - margin)
    return np.stack([cx, cy, r, angle], axis=1)  # (n, 4)


# --------------------------------------------------------------------------------------
# Rendering (numpy rasterisation with one-pixel anti-aliasing from signed distances)
# --------------------------------------------------------------------------------------

def _convex_piece(vertices: list[tuple[float, float]]) -> np.ndarray:
    """Half-planes (nx, ny, c) of a convex polygon: inside where u*nx + v*ny - c >= 0."""
    v = np.asarray(vertices, dtype=np.float64)
    centroid = v.mean(axis=0)
    rows = []
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        edge = b - a
        normal = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
        if normal @ (centroid - a) < 0:
            normal = -normal
        rows.append((normal[0], normal[1], normal @ a))
    return np.asarray(rows)  # (K, 3)


def _shape_pieces() -> dict[str, list[np.ndarray]]:
    def ring(r: float, n: int, offset_deg: float) -> list[tuple[float, float]]:
        return [(r * math.cos(math.radians(offset_deg + 360 * k / n)),
                 r * math.sin(math.radians(offset_deg + 360 * k / n))) for k in range(n)]

    star = []
    for k in range(5):
        a = -90 + 72 * k  # point up in image coordinates (y grows downwards)
        outer = (1.2 * math.cos(math.radians(a)), 1.2 * math.sin(math.radians(a)))
        in1 = (0.5 * math.cos(math.radians(a - 36)), 0.5 * math.sin(math.radians(a - 36)))
        in2 = (0.5 * math.cos(math.radians(a + 36)), 0.5 * math.sin(math.radians(a + 36)))
        star.append(_convex_piece([(0.0, 0.0), in1, outer, in2]))  # a convex kite
    return {
        "square": [_convex_piece([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)])],
        "triangle": [_convex_piece(ring(1.15, 3, -90))],
        "star": star,
        "cross": [_convex_piece([(-1.05, -0.35), (1.05, -0.35), (1.05, 0.35), (-1.05, 0.35)]),
                  _convex_piece([(-0.35, -1.05), (0.35, -1.05), (0.35, 1.05), (-0.35, 1.05)])],
    }


_PIECES = _shape_pieces()


def _coverage(shape: str, cx: float, cy: float, r: float, angle_deg: float, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (H, W) in [0, 1]."""
    cov = np.zeros((size, size))
    # Only the bounding box can be covered (shapes reach 1.2 r); skipping the rest makes
    # rendering several times faster.
    reach = 1.25 * r + 1.0
    x0, x1 = max(0, int(cx - reach)), min(size, int(math.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(size, int(math.ceil(cy + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return cov
    gx, gy = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)  # (h, w)
    dx, dy = gx - cx, gy - cy
    if shape == "circle":
        dist = r - np.hypot(dx, dy)  # pixels
    else:
        th = math.radians(angle_deg)
        c, s = math.cos(th), math.sin(th)
        u = (c * dx + s * dy) / r
        v = (-s * dx + c * dy) / r
        dist = np.full(gx.shape, -np.inf)
        for piece in _PIECES[shape]:
            d = np.min(u[..., None] * piece[:, 0] + v[..., None] * piece[:, 1] - piece[:, 2], axis=-1)
            dist = np.maximum(dist, d)
        dist = dist * r
    cov[y0:y1, x0:x1] = np.clip(dist + 0.5, 0.0, 1.0)
    return cov


def _background(rng: np.random.Generator, cues: dict[str, Any], size: int) -> np.ndarray:
    """Static background (H, W, 3) float in [0, 1] from the brightness/tint/contrast cues."""
    warm = np.array([0.9, 0.25, -0.9])
    green = np.array([-0.45, 0.75, -0.45])
    tint = 0.22 * cues["saturation"] * (cues["warmth"] * warm + cues["green_tint"] * green)
    base = cues["brightness"] + tint  # (3,)
    g = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(g, g)  # (H, W) each, in (0, 1)
    kind = cues["pattern"]
    phi = rng.uniform(0, math.pi)
    if kind == "plain":
        p = np.zeros((size, size))
    elif kind == "stripes":
        freq = rng.uniform(1.5, 5)
        p = np.sin(2 * math.pi * freq * (x * math.cos(phi) + y * math.sin(phi)) + rng.uniform(0, 6.3))
    elif kind == "checker":
        cells = rng.integers(2, 6)
        p = np.sign(np.sin(math.pi * cells * x + 1e-3) * np.sin(math.pi * cells * y + 1e-3))
    elif kind == "gradient":
        p = 2 * ((x - 0.5) * math.cos(phi) + (y - 0.5) * math.sin(phi))
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        p = 1 - 2.5 * np.hypot(x - cx, y - cy)
    elif kind == "blobs":
        p = np.zeros((size, size))
        for _ in range(3):
            bx, by = rng.uniform(0, 1, size=2)
            sign = rng.choice([-1.0, 1.0])
            width = rng.uniform(0.08, 0.2)
            p += sign * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * width**2))
    else:  # "noise": smooth value noise from a coarse random grid, bilinearly upsampled
        k = 5
        grid = rng.uniform(-1, 1, size=(k, k))
        interp = np.array([np.interp(g * (k - 1), np.arange(k), np.eye(k)[j]) for j in range(k)]).T  # (size, k)
        p = interp @ grid @ interp.T
    p = np.clip(p, -1.5, 1.5)
    # The pattern's colour leans partly to a random hue so backgrounds are not uniformly grey-modulated.
    hue = rng.uniform(-1, 1, size=3)
    direction = 0.7 * np.ones(3) + 0.3 * hue * cues["saturation"]
    bg = base[None, None, :] + 0.3 * cues["contrast"] * p[..., None] * direction[None, None, :]
    return np.clip(bg, 0.0, 1.0)


def _render(rng: np.random.Generator, scene: dict[str, Any], track: np.ndarray, size: int) -> np.ndarray:
    """Frames (n, H, W, 3) uint8 RGB."""
    cues = scene["cues"]
    n = track.shape[0]
    bg = _background(rng, cues, size)  # (H, W, 3)
    rgb = np.asarray(COLOURS[scene["colour"]])
    gains = np.clip(1 + cues["flicker"] * rng.standard_normal(n), 0.5, 1.5)  # (n,)
    flash = np.zeros(n)
    for f in cues["flashes"]:
        flash[f] = max(flash[f], 0.7)
        if f + 1 < n:
            flash[f + 1] = max(flash[f + 1], 0.3)  # a flash fades over two frames
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        # Lighting (flicker, flash) acts on the background only: the object keeps its
        # colour, which keeps its identity recoverable from any frame.
        light = np.clip(bg * gains[i], 0, 1)
        light = light + (1 - light) * flash[i]
        a = _coverage(scene["shape"], *track[i], size)[..., None]  # (H, W, 1)
        frame = light * (1 - a) + rgb * a
        frames[i] = np.round(frame * 255).astype(np.uint8)
    return frames


def _rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 // 2, W) uint8 planar YUV 4:2:0, BT.601 limited range.

    Done in numpy rather than by swscale so the encoder's input does not depend on which
    SIMD path swscale picks on a given CPU; BT.601 limited range is what decoders assume
    for untagged H.264, so decoding gives back the rendered colours.
    """
    h, w, _ = rgb.shape
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    cb = cb.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # (H/2, W/2)
    cr = cr.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    planes = [np.round(p).clip(0, 255).astype(np.uint8).reshape(-1) for p in (y, cb, cr)]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


def _encode(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write (n, H, W, 3) uint8 RGB frames as H.264/yuv420p MP4."""
    n, h, w, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # Determinism: x264 output depends on the thread count, so use one thread; and
        # with MB-tree rate control on (the default) repeated encodes of the same frames in
        # one process gave different bytes and pixels (seen with PyAV 18 / x264 core 165
        # on 64x64 clips), while mbtree=0 gave identical bytes every time.
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(frames[i]), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------

def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _caption(rng: np.random.Generator, scene: dict[str, Any], n_emo: int) -> tuple[str, list[str], list[str]]:
    """One caption with ``n_emo`` emotion words; returns (text, emotion words, their categories)."""
    emotion, cues = scene["emotion"], scene["cues"]
    cats = [emotion] * n_emo
    if n_emo == 2 and rng.random() < 0.25:
        cats[1] = _pick(rng, RELATED[emotion])
    if n_emo == 0:
        kinds: list[str] = []
    elif n_emo == 1:
        kinds = [str(rng.choice(["adj", "adv", "noun", "pred", "scene"], p=[0.3, 0.35, 0.13, 0.12, 0.1]))]
    else:
        pairs = [("adj", "adv"), ("adj", "noun"), ("adv", "noun"), ("pred", "adv"), ("adv", "scene")]
        kinds = list(_pick(rng, pairs))
    words: dict[str, str] = {}
    for kind, cat in zip(kinds, cats):
        pos = "adj" if kind in ("adj", "pred", "scene") else kind
        options = [w for w in EMOTION_WORDS[cat][pos] if w not in words.values()]
        words[kind] = _pick(rng, options)

    # Subject noun phrase (without its determiner).
    noun = _pick(rng, SHAPE_WORDS[scene["shape"]]) if rng.random() > 0.1 else _pick(rng, GENERIC_NOUNS)
    np_words = ([words["adj"]] if "adj" in words else []) + \
               ([_pick(rng, COLOUR_WORDS[scene["colour"]])] if rng.random() < 0.85 else []) + [noun]
    phrases = list(ACTION_PHRASES[scene["action"]])
    if scene["shape"] == "circle" and scene["action"] in ROLL_PHRASES:
        phrases.append(ROLL_PHRASES[scene["action"]])
    simple, progressive = _pick(rng, phrases)

    tempo_word = None
    if cues["tempo"] < 0.65 and rng.random() < 0.6:
        tempo_word = _pick(rng, SLOW_WORDS)
    elif cues["tempo"] > 1.35 and rng.random() < 0.6:
        tempo_word = _pick(rng, FAST_WORDS)
    extras: list[str] = []
    if cues["shake"] > 1.0 and rng.random() < 0.4:
        extras.append(_pick(rng, ["while shaking", "and trembles", "shaking all over"]))
    if cues["flashes"] and rng.random() < 0.3:
        extras.append(_pick(rng, ["as the light flashes", "under flashing lights"]))
    if rng.random() < 0.25:
        if cues["brightness"] < 0.33:
            extras.append(_pick(rng, ["in the dark", "on a dark background"]))
        elif cues["brightness"] > 0.66:
            extras.append(_pick(rng, ["on a bright background", "in bright light"]))

    if "pred" in words:
        # Predicative frames: "the red ball looks sad as it slowly falls",
        # "a red ball falls slowly looking sad", "a red ball is slowly falling and looks sad".
        det = _pick(rng, ["a", "the"])
        subject = [det if det == "the" else _article(np_words[0])] + np_words
        tempo = [tempo_word] if tempo_word else []
        frame = int(rng.integers(3))
        if frame == 0:
            verb = ["looks", words["pred"], "as", "it"] + tempo + [simple]
        elif frame == 1:
            verb = [simple] + tempo + ["looking", words["pred"]]
        else:
            ing = progressive.split()
            verb = ing[:1] + tempo + ing[1:] + ["and", "looks", words["pred"]]
        tokens = subject + verb
        if "adv" in words:
            tokens = [words["adv"]] + tokens if rng.random() < 0.5 else tokens + [words["adv"]]
        return " ".join(tokens + extras[:1]), list(words.values()), cats

    use_progressive = rng.random() < 0.4
    there_is = rng.random() < 0.15
    if there_is:
        subject = ["there", "is", _article(np_words[0])] + np_words + ["that"]
        verb = simple.split()  # "there is a ball that is moving" reads oddly
    else:
        det = _pick(rng, ["a", "the"])
        subject = [det if det == "the" else _article(np_words[0])] + np_words
        verb = progressive.split() if use_progressive else simple.split()
    # "slowly there is a ball..." reads oddly, so "there is" captions put nothing in front.
    positions = ["mid", "end"] if there_is else ["front", "mid", "end"]
    adv_pos = _pick(rng, positions) if "adv" in words else None
    tempo_pos = None
    if tempo_word:
        tempo_pos = _pick(rng, [p for p in positions if p != adv_pos or p == "end"])

    front: list[str] = []
    mid: list[str] = []
    end: list[str] = []
    for word, pos in ((tempo_word, tempo_pos), (words.get("adv"), adv_pos)):
        if word is None:
            continue
        {"front": front, "mid": mid, "end": end}[pos].append(word)
    if mid:
        # "is happily bouncing" for the progressive, "happily bounces" for the simple form.
        verb = verb[:1] + mid + verb[1:] if verb[0] == "is" else mid + verb
    if "noun" in words:
        end.append(f"{EMOTION_NOUN_PHRASES[words['noun']]} {words['noun']}")
    if "scene" in words:
        end.append(f"in {_article(words['scene'])} {words['scene']} scene")
    tokens = front + subject + verb + end + extras[: int(rng.integers(0, 2))]
    return " ".join(tokens), list(words.values()), cats


def _captions(rng: np.random.Generator, scene: dict[str, Any], emotion_share: float | None = None
              ) -> list[dict[str, Any]]:
    k = int(rng.integers(5, 9))
    lo, hi = BIAS_SHARE[scene["bias"]]
    n_emotional = int(round(rng.uniform(lo, hi) * k))
    if emotion_share is not None:
        # Drawn after the bias share so the rest of the video's captions use the same random
        # numbers as without the override.
        n_emotional = int(rng.binomial(k, emotion_share))
    counts = np.zeros(k, dtype=int)
    emotional_idx = rng.permutation(k)[:n_emotional]
    counts[emotional_idx] = 1 + (rng.random(n_emotional) < BIAS_TWO_WORDS[scene["bias"]])
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n_emo in counts.tolist():
        for _ in range(20):  # resample the rare exact duplicate within one video
            text, words, cats = _caption(rng, scene, n_emo)
            if text not in seen:
                break
        seen.add(text)
        out.append({"text": text, "emotion_words": words, "emotion_categories": cats[: len(words)]})
    return out


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------

def _split(rng: np.random.Generator, ids: list[str], emotions: list[str], test_fraction: float) -> set[str]:
    n = len(ids)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if n_test == 0:
        return set()
    # Evenly spaced picks over the list sorted by emotion give a stratified test split.
    keys = rng.random(n)
    order = sorted(range(n), key=lambda i: (emotions[i], keys[i]))
    picks = [order[int((j + 0.5) * n / n_test)] for j in range(n_test)]
    return {ids[i] for i in picks}


def _round(obj: Any) -> Any:
    # Rounded floats keep scenes.json readable; generation itself uses the full values.
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def _check_lexicon(folder: Path) -> None:
    lexicon = read_lexicon(folder)
    for cat, by_pos in EMOTION_WORDS.items():
        for words in by_pos.values():
            for w in words:
                if cat not in lexicon.categories_of(w):
                    raise RuntimeError(f"{folder}: demo caption word '{w}' is missing from category '{cat}'")


def _prepare_out_dir(out_dir: Path) -> None:
    # Only a previous demo (or an empty folder) is replaced: a mistyped --out must never
    # delete someone's unrelated data.
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    # Empty sub-folders hold no data: Snakemake creates them for a rule's outputs.
    if not any(p.is_file() or p.is_symlink() for p in out_dir.rglob("*")):
        return
    marker = out_dir / "scenes.json"
    try:
        is_demo = marker.is_file() and read_json(marker).get("generator") == GENERATOR
    except (ValueError, AttributeError):
        is_demo = False
    if not is_demo:
        raise FileExistsError(
            f"{out_dir}: folder exists and is not a demo dataset (no scenes.json written by {GENERATOR}); "
            "refusing to replace it")


def make_demo(out_dir: str | os.PathLike, n_videos: int = 300, seed: int = 0, n_frames: int = 24, size: int = 64,
              fps: int = 12, test_fraction: float = 0.2, emotion_share: float | None = None) -> dict[str, Any]:
    """Write the synthetic demo dataset to ``out_dir`` (replacing a previous demo there).

    The dataset is built in a temporary folder beside ``out_dir`` and renamed into place
    at the end, so an interrupted run leaves no partial dataset. Returns a summary with
    counts and paths.

    ``emotion_share`` (None: the bias classes' shares) makes each caption carry emotion
    words with this probability instead. The demo's CLIP pretraining pool uses a low share,
    like the web alt-text real CLIP learns from, which rarely names an emotion.
    """
    if n_videos < 1:
        raise ValueError(f"make_demo: n_videos must be >= 1, got {n_videos}")
    if n_frames < 3:
        raise ValueError(f"make_demo: n_frames must be >= 3, got {n_frames}")
    if size < 16 or size % 2:
        raise ValueError(f"make_demo: size must be an even number >= 16 (yuv420p), got {size}")
    if fps < 1:
        raise ValueError(f"make_demo: fps must be >= 1, got {fps}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"make_demo: test_fraction must be in [0, 1), got {test_fraction}")
    if emotion_share is not None and not 0.0 <= emotion_share <= 1.0:
        raise ValueError(f"make_demo: emotion_share must be in [0, 1], got {emotion_share}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    lexicon_src = demo_lexicon_dir()
    _check_lexicon(lexicon_src)

    rng = np.random.default_rng([seed, 0])
    ids = [f"vid{i + 1}" for i in range(n_videos)]
    emotions = _balanced(rng, EMOTIONS, n_videos)
    actions = _balanced(rng, ACTIONS, n_videos)
    biases = _balanced(rng, BIAS_CLASSES, n_videos)
    test_ids = _split(rng, ids, emotions, test_fraction)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        (tmp / "videos").mkdir()
        (tmp / "captions").mkdir()
        (tmp / "lexicon").mkdir()
        videos: dict[str, Any] = {}
        for i, vid in enumerate(ids):
            # One generator per video: a video's content does not depend on the ones before it.
            vrng = np.random.default_rng([seed, 1, i])
            action = actions[i]
            # A spinning disc looks static, so spins never pick the circle.
            shapes = [s for s in SHAPES if not (action == "spins" and SYMMETRY_DEG[s] == 0.0)]
            shape = shapes[int(vrng.integers(len(shapes)))]
            colour = list(COLOURS)[int(vrng.integers(len(COLOURS)))]
            cues = _sample_cues(vrng, emotions[i], n_frames)
            scene = {"split": "test" if vid in test_ids else "train", "shape": shape, "colour": colour,
                     "colour_rgb": [int(round(c * 255)) for c in COLOURS[colour]], "action": action,
                     "emotion": emotions[i], "bias": biases[i], "cues": cues}
            track = _trajectory(vrng, action, shape, cues, n_frames, size)  # (n_frames, 4)
            frames = _render(vrng, scene, track, size)  # (n_frames, size, size, 3)
            _encode(tmp / "videos" / f"{vid}.mp4", frames, fps)
            scene["captions"] = _captions(vrng, scene, emotion_share)
            scene["track"] = track.round(2).tolist()  # per frame: cx, cy, radius (px), angle (deg)
            videos[vid] = scene

        for name in sorted(os.listdir(lexicon_src)):
            if name.endswith(".txt"):
                shutil.copyfile(lexicon_src / name, tmp / "lexicon" / name)
        # CRLF and a single header like the official EmVidCap CSVs, so readers meet the same bytes.
        for fname, split in ((TRAINVAL_CSV, "train"), (TEST_CSV, "test")):
            rows = ["VideoID,EmCaptions"] + [f"{vid},{c['text']}" for vid in ids if videos[vid]["split"] == split
                                             for c in videos[vid]["captions"]]
            write_text(tmp / "captions" / fname, "\r\n".join(rows) + "\r\n")
        meta = {"generator": GENERATOR, "format_version": FORMAT_VERSION, "seed": seed, "n_videos": n_videos,
                "n_frames": n_frames, "size": size, "fps": fps, "test_fraction": test_fraction,
                "emotion_share": emotion_share,
                "emotions": EMOTIONS, "actions": ACTIONS, "shapes": SHAPES, "bias_classes": BIAS_CLASSES,
                "colours": {k: [int(round(c * 255)) for c in v] for k, v in COLOURS.items()},
                "videos": _round(videos)}
        write_json(tmp / "scenes.json", meta)

    n_caps = {s: sum(len(v["captions"]) for v in videos.values() if v["split"] == s) for s in ("train", "test")}
    return {
        "out_dir": str(out_dir),
        "n_videos": n_videos,
        "n_train": n_videos - len(test_ids),
        "n_test": len(test_ids),
        "n_captions": n_caps["train"] + n_caps["test"],
        "n_train_captions": n_caps["train"],
        "n_test_captions": n_caps["test"],
        "categories": EMOTIONS,
        "videos_dir": str(out_dir / "videos"),
        "trainval_csv": str(out_dir / "captions" / TRAINVAL_CSV),
        "test_csv": str(out_dir / "captions" / TEST_CSV),
        "lexicon_dir": str(out_dir / "lexicon"),
        "scenes_json": str(out_dir / "scenes.json"),
        "seconds": round(time.perf_counter() - start, 2),
    }


# --------------------------------------------------------------------------------------
# CLI (wired into ``facenet-evc make-demo`` by cli.py)
# --------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``make-demo`` options to ``parser``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the demo dataset to "
                        "(replaced if it holds a previous demo)")
    parser.add_argument("--n-videos", type=int, default=300, help="number of videos (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of videos in the test split (default: 0.2; 0 for a pretraining pool)")
    parser.add_argument("--emotion-share", type=float, default=None, metavar="P",
                        help="each caption carries emotion words with probability P (default: the per-video "
                        "bias classes' shares, 45-100%%)")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``make-demo`` from parsed arguments; print a short summary; return the exit code."""
    try:
        s = make_demo(args.out, n_videos=args.n_videos, seed=args.seed, test_fraction=args.test_fraction,
                      emotion_share=args.emotion_share)
    except (FileExistsError, ValueError) as e:
        print(f"make-demo: error: {e}", file=sys.stderr)
        return 1
    print(f"demo dataset written to {s['out_dir']} in {s['seconds']} s: {s['n_videos']} videos "
          f"({s['n_train']} train, {s['n_test']} test), {s['n_captions']} captions, "
          f"{len(s['categories'])} emotion categories")
    return 0
