"""Photos with known faces, for testing face detection: face crops pasted at random sizes and
places onto made-up backgrounds (gradients, noise, stripes and shapes), 0 to 4 faces each."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTO_SIZE = (640, 480)
FACE_SIDES = (40, 400)  # pasted face sides, log-uniform


@dataclass(frozen=True)
class Pasted:
    """A face pasted into a composite: its square (pixels) and the index of the face image used."""

    x: int
    y: int
    side: int
    source: int


def background(rng: np.random.Generator, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """A made-up RGB background: a colour gradient, blurred colour noise, stripes and random shapes."""
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, height)[:, None, None]
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    pixels = start + (end - start) * ramp * np.ones((height, width, 1))
    noise = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(size)
    pixels = 0.7 * pixels + 0.3 * np.asarray(noise.filter(ImageFilter.GaussianBlur(4)), float)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.3:
        period = int(rng.integers(8, 40))
        for x in range(0, width, period):
            draw.line([(x, 0), (x, height)], fill=tuple(map(int, rng.integers(0, 256, 3))), width=period // 3)
    for _ in range(int(rng.integers(0, 25))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(5, 200)), y0 + int(rng.integers(5, 200))]
        colour = tuple(map(int, rng.integers(0, 256, 3)))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    return image


def composite_photos(
    faces: Sequence[Image.Image],
    count: int,
    seed: int = 0,
    size: tuple[int, int] = PHOTO_SIZE,
    max_faces: int = 4,
    sides: tuple[int, int] = FACE_SIDES,
    max_roll: float = 0.0,
) -> list[tuple[Image.Image, list[Pasted]]]:
    """``count`` photos, each a :func:`background` with 0 to ``max_faces`` of ``faces`` (square
    crops, drawn at random) pasted without overlap, side log-uniform in ``sides``, sometimes
    mirrored and brightened or darkened, turned by up to ``max_roll`` degrees either way (the
    corners the turn uncovers show the background). A face that does not fit is halved, down to
    the smallest side, then left out."""
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        photo = background(rng, size)
        placed: list[Pasted] = []
        for _ in range(int(rng.integers(0, max_faces + 1))):
            source = int(rng.integers(len(faces)))
            side = min(round(math.exp(rng.uniform(*np.log(sides)))), min(size))
            while side >= sides[0]:
                spot = free_spot(rng, size, side, placed)
                if spot is not None:
                    face = faces[source].convert("RGB").resize((side, side), Image.LANCZOS)
                    if rng.random() < 0.5:
                        face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    face = Image.eval(face, lambda v, gain=rng.uniform(0.8, 1.2): min(255, round(v * gain)))
                    face = face.convert("RGBA").rotate(rng.uniform(-max_roll, max_roll), Image.BILINEAR)
                    photo.paste(face, spot, face)
                    placed.append(Pasted(spot[0], spot[1], side, source))
                    break
                side //= 2
        photos.append((photo, placed))
    return photos


def free_spot(
    rng: np.random.Generator, size: tuple[int, int], side: int, placed: list[Pasted], tries: int = 30
) -> tuple[int, int] | None:
    """A random top-left corner where a square of ``side`` overlaps no placed face, or None."""
    for _ in range(tries):
        x, y = int(rng.integers(0, size[0] - side + 1)), int(rng.integers(0, size[1] - side + 1))
        if all(x + side <= p.x or p.x + p.side <= x or y + side <= p.y or p.y + p.side <= y for p in placed):
            return x, y
    return None
