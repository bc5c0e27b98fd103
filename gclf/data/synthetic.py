"""The embedded default dataset: deterministic, face-like drawings of two overlapping classes.

Each image is drawn from its own generator ``numpy.random.default_rng([seed, index])``, so the
same seed gives byte-identical files. The classes differ only in tendencies (hair length, jaw
width, brow thickness, lip colour, eye size, stubble) drawn from overlapping distributions, and
share all nuisance variation (background, skin tone, hair colour, glasses, pose, lighting, noise),
so a classifier cannot reach 100 % and threshold, loss and TTA choices make visible differences.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from gclf.data import WORKERS
from gclf.data.manifest import CLASSES

SUPERSAMPLE = 2  # draw at twice the size and downsample: ImageDraw has no antialiasing
SKIN_TONES = {  # name: (probability, base RGB)
    "light": (0.5, (236, 200, 172)),
    "medium": (0.3, (196, 146, 108)),
    "dark": (0.2, (118, 80, 56)),
}
HAIR_COLOURS = ((25, 20, 18), (60, 40, 28), (110, 75, 45), (200, 165, 100), (150, 70, 35), (150, 150, 150))
LIPSTICK = np.array((196, 40, 72))
GLASSES = (30, 30, 30)
HW, HH = 0.22, 0.29  # head half-width and half-height, in face units

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Face:
    """Everything that decides one drawing: sizes in face units, centre as a fraction of the canvas."""

    skin_name: str
    skin: Colour
    hair: Colour
    long_hair: bool
    bald: bool
    jaw: float  # chin-corner width relative to the cheeks: wider looks squarer
    brow: float  # eyebrow thickness
    eye: float  # eye size
    lips: Colour
    lip_height: float
    stubble: bool
    glasses: bool
    background: tuple[Colour, Colour]  # top and bottom of a vertical gradient
    shirt: Colour
    centre: tuple[float, float]
    scale: float
    angle: float  # degrees
    brightness: float
    noise: float  # pixel noise standard deviation, in 0-255 units


def _colour(values) -> Colour:
    return tuple(int(v) for v in np.clip(np.round(values), 0, 255))


def _mix(a, b, weight: float) -> Colour:
    """``a`` moved towards ``b`` by ``weight`` in [0, 1]."""
    return _colour((1 - weight) * np.asarray(a, float) + weight * np.asarray(b, float))


def sample_face(rng: np.random.Generator, female: bool) -> Face:
    """Draw one face's parameters: class cues overlap, nuisance does not depend on the class."""
    names = list(SKIN_TONES)
    skin_name = names[rng.choice(len(names), p=[SKIN_TONES[n][0] for n in names])]
    skin = _colour(np.asarray(SKIN_TONES[skin_name][1]) + rng.normal(0, 10, 3))
    lip_saturation = float(np.clip(rng.normal(0.45 if female else 0.2, 0.18), 0, 1))
    plain = rng.random() < 0.5
    top = _colour(rng.uniform(30, 230, 3))
    bottom = top if plain else _colour(rng.uniform(30, 230, 3))
    # class cues (female value first): long_hair, bald, jaw, brow, eye, lip colour and height, stubble
    return Face(
        skin_name=skin_name,
        skin=skin,
        hair=_colour(np.asarray(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]) + rng.normal(0, 8, 3)),
        long_hair=bool(rng.random() < (0.75 if female else 0.2)),
        bald=bool(rng.random() < (0.02 if female else 0.08)),
        jaw=float(rng.normal(0.78 if female else 0.86, 0.07)),
        brow=float(max(0.3, rng.normal(0.8 if female else 1.0, 0.22))),
        eye=float(rng.normal(1.05 if female else 0.98, 0.09)),
        lips=_mix(_mix(skin, (120, 40, 40), 0.3), LIPSTICK, lip_saturation),
        lip_height=float(max(0.5, rng.normal(1.1 if female else 0.95, 0.2))),
        stubble=bool(rng.random() < (0.03 if female else 0.22)),
        glasses=bool(rng.random() < 0.15),
        background=(top, bottom),
        shirt=_colour(rng.uniform(20, 235, 3)),
        centre=(float(rng.normal(0.5, 0.03)), float(rng.normal(0.47, 0.03))),
        scale=float(rng.uniform(0.85, 1.1)),
        angle=float(rng.uniform(-12, 12)),
        brightness=float(rng.uniform(0.75, 1.2)),
        noise=float(rng.uniform(2, 12)),
    )


def _gradient(top: Colour, bottom: Colour, size: int) -> Image.Image:
    weights = np.linspace(0, 1, size)[:, None, None]
    rows = (1 - weights) * np.asarray(top, float) + weights * np.asarray(bottom, float)
    return Image.fromarray(np.broadcast_to(rows, (size, size, 3)).round().astype(np.uint8))


@dataclass(frozen=True)
class _Frame:
    """Face coordinates on the canvas: (0, 0) is the head centre, 1 is the face scale in pixels."""

    cx: float
    cy: float
    s: float

    def points(self, *xy: tuple[float, float]) -> list[tuple[float, float]]:
        return [(self.cx + x * self.s, self.cy + y * self.s) for x, y in xy]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        (a, b), (c, d) = self.points((x0, y0), (x1, y1))
        return a, b, c, d

    def width(self, w: float) -> int:
        return max(1, round(w * self.s))


def _jaw_outline(frame: _Frame, jaw: float, top_y: float, top_half_width: float, corner: float) -> list:
    """A symmetric lower-face polygon from ``top_y`` down to the chin; a wider ``jaw`` is squarer."""
    half = [(-top_half_width, top_y), (-HW * jaw * corner, 0.17), (-HW * jaw * 0.4, HH)]
    return frame.points(*half, *[(-x, y) for x, y in reversed(half)])


def _draw_body(draw: ImageDraw.ImageDraw, f: _Frame, face: Face) -> None:
    """Shoulders, long hair behind the head, and the neck."""
    draw.ellipse(f.box(-0.45, 0.42, 0.45, 0.85), fill=face.shirt)
    if face.long_hair:
        draw.rounded_rectangle(f.box(-1.25 * HW, -1.08 * HH, 1.25 * HW, 0.62), f.s * 0.2, fill=face.hair)
    draw.rectangle(f.box(-0.09, 0.15, 0.09, 0.5), fill=_mix(face.skin, (0, 0, 0), 0.25))


def _draw_head(draw: ImageDraw.ImageDraw, f: _Frame, face: Face) -> None:
    """Head and jaw in skin, stubble (skin darkened towards the hair colour), and the hair cap unless bald."""
    draw.ellipse(f.box(-HW, -HH, HW, HH), fill=face.skin)
    draw.polygon(_jaw_outline(f, face.jaw, 0, HW, 0.97), fill=face.skin)
    if face.stubble:
        stubble = _mix(face.skin, _mix(face.hair, (0, 0, 0), 0.4), 0.35)
        draw.polygon(_jaw_outline(f, face.jaw, 0.08, 0.95 * HW, 0.9), fill=stubble)
    if not face.bald:
        draw.chord(f.box(-1.06 * HW, -1.1 * HH, 1.06 * HW, 0.1 * HH), 180, 360, fill=face.hair)


def _draw_features(draw: ImageDraw.ImageDraw, f: _Frame, face: Face) -> None:
    """Eyes, eyebrows, glasses, nose and lips."""
    eye_y, brow_y = -0.03, -0.095
    ew, eh, iris = 0.042 * face.eye, 0.022 * face.eye, 0.018 * face.eye
    for side in (-1, 1):
        ex = side * 0.095
        draw.ellipse(f.box(ex - ew, eye_y - eh, ex + ew, eye_y + eh), fill=(245, 245, 240))
        draw.ellipse(f.box(ex - iris, eye_y - iris, ex + iris, eye_y + iris), fill=(60, 45, 35))
        draw.line(
            f.points((ex - 0.055 * side, brow_y + 0.01), (ex + 0.05 * side, brow_y - 0.004)),
            fill=_mix(face.hair, (0, 0, 0), 0.3),
            width=f.width(0.02 * face.brow),
        )
        if face.glasses:
            draw.ellipse(f.box(ex - 0.06, eye_y - 0.06, ex + 0.06, eye_y + 0.06), outline=GLASSES, width=f.width(0.008))
    if face.glasses:
        draw.line(f.points((-0.035, eye_y), (0.035, eye_y)), fill=GLASSES, width=f.width(0.008))
    draw.line(
        f.points((0, eye_y + 0.02), (0.015, 0.09), (-0.01, 0.1)),
        fill=_mix(face.skin, (0, 0, 0), 0.25),
        width=f.width(0.012),
    )
    mh = 0.018 * face.lip_height
    draw.ellipse(f.box(-0.07, 0.175 - mh, 0.07, 0.175 + mh), fill=face.lips)


def _draw_face(face: Face, size: int) -> Image.Image:
    """Shoulders, head, hair and features on a transparent layer of ``size`` pixels, upright."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    frame = _Frame(face.centre[0] * size, face.centre[1] * size, face.scale * size)
    for part in (_draw_body, _draw_head, _draw_features):
        part(draw, frame, face)
    return layer


def render(face: Face, rng: np.random.Generator, image_size: int) -> Image.Image:
    """The finished RGB image: gradient background, posed face, lighting and pixel noise."""
    size = image_size * SUPERSAMPLE
    centre = (face.centre[0] * size, face.centre[1] * size)
    layer = _draw_face(face, size).rotate(face.angle, Image.BILINEAR, center=centre)
    picture = _gradient(*face.background, size).convert("RGBA")
    picture.alpha_composite(layer)
    small = np.asarray(picture.convert("RGB").resize((image_size, image_size), Image.BOX), dtype=np.float64)
    noisy = small * face.brightness + rng.normal(0, face.noise, small.shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


def female_flags(count: int, seed: int, female_fraction: float) -> np.ndarray:
    """Exactly ``round(count * female_fraction)`` females, at seeded random positions."""
    return np.random.default_rng(seed).permutation(count) < round(count * female_fraction)


def make_synthetic(
    out_dir: str, count: int, seed: int, image_size: int = 64, female_fraction: float = 0.3
) -> list[tuple[str, int, dict[str, str]]]:
    """Write ``count`` PNGs to ``out_dir/{male,female}/NNNNN.png``; return (relative path, label, metadata).

    The metadata (``{"skin": "light" | "medium" | "dark"}``) gives subgroup audits a column.
    """
    width = max(5, len(str(count - 1)))
    for name in CLASSES:
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)

    def write(index: int, female: bool) -> tuple[str, int, dict[str, str]]:
        rng = np.random.default_rng([seed, index])
        face = sample_face(rng, female)
        label = int(female)
        rel = f"{CLASSES[label]}/{index:0{width}d}.png"
        render(face, rng, image_size).save(os.path.join(out_dir, rel))
        return rel, label, {"skin": face.skin_name}

    flags = [bool(f) for f in female_flags(count, seed, female_fraction)]
    # each image has its own generator, so threads (PIL and file I/O release the GIL) change nothing
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(tqdm(pool.map(write, range(count), flags), total=count, desc="synthetic", unit="img"))
