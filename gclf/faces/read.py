"""One image file read for the classifier: decoded as the evaluate stage decodes it, or the face in it
aligned (:mod:`gclf.faces.align`); a file that cannot be used gives its reason, never an exception.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import numpy as np
from PIL import Image, ImageOps

from gclf.data.images import decode_image, to_rgb
from gclf.data.manifest import DataError
from gclf.faces.align import Aligner

MIN_IMAGE_SIDE = 32  # measured (docs/faces.md): UTKFace test crops reduced to 32 px lose 4 points, to 8 px all

Result = TypeVar("Result")


# --- decoding ---------------------------------------------------------------------------------


def read_image(path: str, image_size: int, aligner: Aligner | None = None) -> tuple[np.ndarray | None, str]:
    """``(pixels, "")`` with (S, S, 3) uint8 pixels as evaluate decodes them (with an ``aligner``: the
    face crop aligned, :meth:`gclf.faces.align.Aligner.face_pixels`), or ``(None, reason)``.

    Never raises for a bad file: one unreadable image must not stop a batch. An image under
    :data:`MIN_IMAGE_SIDE` px a side is refused: it cannot hold a face the model can tell.
    """

    def decode() -> np.ndarray:
        with Image.open(path) as image:
            if min(image.size) < MIN_IMAGE_SIDE:
                width, height = image.size
                raise DataError(f"too small for a face ({width}x{height} px; at least {MIN_IMAGE_SIDE} px a side)")
            if aligner is not None:
                return aligner.face_pixels(np.asarray(to_rgb(ImageOps.exif_transpose(image))), image_size)
        return decode_image(path, image_size)

    return guarded(decode, path)


def guarded(read: Callable[[], Result], path: str) -> tuple[Result | None, str]:
    """``(read(), "")``, or ``(None, reason)`` when reading the file ``path`` fails."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        return read(), ""
    except DataError as e:
        return None, str(e)
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a folder"
    except PermissionError:
        return None, "permission denied"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"too large (over {Image.MAX_IMAGE_PIXELS} pixels, PIL's decompression-bomb limit)"
    except Image.UnidentifiedImageError:
        return None, "not an image"
    except Exception as e:  # PIL raises many types on malformed files (OSError, SyntaxError, ValueError, ...)
        if "truncated" in str(e).lower():
            return None, "truncated image"
        return None, f"cannot decode ({type(e).__name__}: {' '.join(str(e).split())})"
