"""Photos for face detection: decoded upright and no larger than the detector needs.

A JPEG is decoded at 1/2, 1/4 or 1/8 of its size directly (``Image.draft``: DCT scaling, far less
work and memory than a full decode): a 10,000 x 10,000 px JPEG took 16 MB and 0.2 s rather than
1.1 GB and 2.3 s (docs/faces.md); other formats are decoded whole and reduced. Boxes found on the
smaller copy are scaled back to the pixels of the whole upright photo.
"""

from __future__ import annotations

import math

from PIL import Image, ImageOps

from gclf.data.images import to_rgb
from gclf.data.manifest import DataError

PHOTO_MAX_SIDE = 2048  # the detector's finest tiles see 1/4 of the side, so finer pixels go unused
PHOTO_MAX_PIXELS = 120_000_000  # 10,000 x 12,000; a PNG that size decodes to 360 MB of RGB
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
RESIZABLE_MODES = ("RGB", "RGBA", "L", "LA")


def open_photo(path: str, max_side: int = PHOTO_MAX_SIDE) -> tuple[Image.Image, tuple[float, float]]:
    """The EXIF-upright RGB photo with its long side at most ``max_side``, and the factors (x, y)
    from its pixels to those of the whole upright photo. Raises :class:`DataError` over
    :data:`PHOTO_MAX_PIXELS`, and PIL's errors for files that are not images."""
    with Image.open(path) as image:
        width, height = image.size
        if width * height > PHOTO_MAX_PIXELS:
            raise DataError(f"too large ({width}x{height} px; the limit is {PHOTO_MAX_PIXELS:,} pixels)")
        if image.getexif().get(ImageOps.ExifTags.Base.Orientation) in TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        if max(image.size) > max_side:
            # at least max_side / 2 on the long side: draft never goes below the size it is asked for
            scale = max_side / 2 / max(image.size)
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a photo that is already upright
        if max(image.size) > max_side and image.mode in RESIZABLE_MODES:  # before to_rgb copies it
            image = fit(image, max_side)
        rgb = to_rgb(image)
    if max(rgb.size) > max_side:
        rgb = fit(rgb, max_side)
    return rgb, (width / rgb.width, height / rgb.height)


def fit(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` resized (antialiased) to a long side of ``max_side``."""
    scale = max_side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR, reducing_gap=3.0)
