"""Faces in photos: MediaPipe's BlazeFace full-range detector on OpenVINO, a tile pyramid for small
faces, and the crop the classifier was trained on.

The detector sees a 192 x 192 view. A face fills too few of those pixels once it is under about a
sixth of the view's side (measured on composites: every face of 100 px or more in a 640 px photo is
found, two thirds of the 50-99 px ones), so the photo is looked at whole, then in tiles half as
large (half-tile stride, so any face up to half a tile lies whole inside one), level by level until
faces of ``min_face_size`` pixels are big enough, at most :data:`MAX_TILE_LEVELS` levels. A face
that fills most of the view, or is cut by its edge (a portrait, a face crop), goes unfound too (6
of 1,000 UTKFace chips were found), so the photo is also looked at from further away: centred in
black views :data:`FARTHER_VIEWS` times its long side, where such a face is a normal-size face
(1,000 of 1,000 found; docs/faces.md).

UTKFace crops, which the models are trained on, are upright squares slightly larger than the
detector's box and a little lower; :func:`crop_square` maps a box onto such a square (fitted on
UTKFace faces pasted into photos; the crop's IoU with the true crop rises from 0.84 to 0.88), and
:func:`face_crop` levels the eyes of a face turned :data:`LEVEL_FROM_DEGREES` or more.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from gclf.faces.photos import open_photo

MODEL_PATH = Path(__file__).parent / "weights" / "face_detection_full_range.tflite"
INPUT_SIZE = 192
ANCHOR_GRID = 48  # one anchor per 4 x 4 cell of the input, at the cell centre
MIN_SCORE = 0.6  # measured (docs/faces.md): false positives all scored 0.52-0.59; recall the same as at 0.5
NMS_IOU = 0.3  # MediaPipe's suppression threshold for this model
RELIABLE_FRACTION = 1 / 6  # of a view's side: the smallest face found reliably (32 px of the 192 px input)
MAX_TILE_LEVELS = 2  # so at most 1 + 2 + 6 + 35 views for a 4:3 photo (the 2: FARTHER_VIEWS)
FARTHER_VIEWS = (2.5, 4.0)  # padded views, in long sides: measured best of 1.5-5 and their pairs (docs/faces.md)
EDGE_FRACTION = 0.02  # a tile's detection this close to an inner tile edge is a cut face: dropped
CROP_SCALE = 1.05  # UTK crop side / sqrt(box area)
CROP_SHIFT = (0.01, 0.04)  # UTK crop centre - box centre, in units of sqrt(box area) (x right, y down)
LEVEL_FROM_DEGREES = 10.0  # eye-line error on upright faces: SD 4 degrees, p95 9.4: smaller rolls are noise
SIZE_SLACK = 0.9  # crop sides scatter by 7 % (SD) around the true face's: keep faces that may be big enough
DEFAULT_MIN_FACE_SIZE = 64
NO_DETECTIONS = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 2, 2)))  # boxes, scores, eye pairs
DEFAULT_MAX_FACES = 20


@dataclass(frozen=True)
class Face:
    """A detected face: box (pixels, top-left corner and size), score in [0, 1], and the eye centres
    (the eye on the image's left first)."""

    x: float
    y: float
    w: float
    h: float
    score: float
    eyes: tuple[tuple[float, float], tuple[float, float]]

    @property
    def size(self) -> float:
        return math.sqrt(self.w * self.h)

    @property
    def roll_degrees(self) -> float:
        """Angle of the eye line, clockwise as seen (image y points down)."""
        (lx, ly), (rx, ry) = self.eyes
        return math.degrees(math.atan2(ry - ly, rx - lx))

    def scaled(self, sx: float, sy: float) -> Face:
        """The same face in an image ``sx`` x ``sy`` times as large."""
        (lx, ly), (rx, ry) = self.eyes
        return replace(
            self,
            x=self.x * sx,
            y=self.y * sy,
            w=self.w * sx,
            h=self.h * sy,
            eyes=((lx * sx, ly * sy), (rx * sx, ry * sy)),
        )


def anchors() -> np.ndarray:
    """(2304, 2) anchor centres in [0, 1], row by row."""
    centres = (np.arange(ANCHOR_GRID, dtype=np.float32) + 0.5) / ANCHOR_GRID
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def tile_starts(length: float, side: float) -> list[float]:
    """Starts of windows of ``side`` covering ``length`` at about half-window stride (one centred
    window when it fits)."""
    if length <= side:
        return [(length - side) / 2]
    count = math.ceil((length - side) / (side / 2)) + 1
    return [float(v) for v in np.linspace(0, length - side, count)]


def detection_windows(width: int, height: int, min_face_size: float) -> list[tuple[float, float, float]]:
    """Square views ``(left, top, side)`` to run the detector on: the whole image, the image from
    further away (:data:`FARTHER_VIEWS`), then tile levels until faces of ``min_face_size`` px are at
    least :data:`RELIABLE_FRACTION` of a view."""
    side = float(max(width, height))
    windows = [((width - s) / 2, (height - s) / 2, s) for s in (side, *(k * side for k in FARTHER_VIEWS))]
    for _ in range(MAX_TILE_LEVELS):
        if side * RELIABLE_FRACTION <= min_face_size:
            break
        side /= 2
        windows += [(x, y, side) for y in tile_starts(height, side) for x in tile_starts(width, side)]
    return windows


def window_input(image: Image.Image, left: float, top: float, side: float) -> np.ndarray:
    """(1, 192, 192, 3) float32 in [-1, 1]: the view scaled to the detector's input; parts outside the
    image are black (-1: it found more cut faces than mid-grey 0 did, docs/faces.md)."""
    scale = INPUT_SIZE / side
    x0, y0 = max(left, 0.0), max(top, 0.0)
    x1, y1 = min(left + side, image.width), min(top + side, image.height)
    canvas = np.full((INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)
    px, py = round((x0 - left) * scale), round((y0 - top) * scale)
    w, h = min(INPUT_SIZE - px, round((x1 - x0) * scale)), min(INPUT_SIZE - py, round((y1 - y0) * scale))
    if w > 0 and h > 0:
        part = image.resize((w, h), Image.BILINEAR, box=(x0, y0, x1, y1), reducing_gap=3.0)
        canvas[py : py + h, px : px + w] = np.asarray(part, np.float32) / 127.5 - 1.0
    return canvas[None]


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, eyes: np.ndarray) -> list[Face]:
    """MediaPipe's weighted suppression: each cluster of boxes overlapping the best one by more than
    :data:`NMS_IOU` becomes their score-weighted mean, with the best score."""
    faces = []
    usable = np.isfinite(boxes).all(1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)  # an empty box overlaps nothing
    order = np.argsort(-scores[usable])
    boxes, scores, eyes = boxes[usable][order], scores[usable][order], eyes[usable][order]
    while len(scores):
        overlap = box_iou(boxes[0], boxes) > NMS_IOU
        overlap[0] = True
        weights = scores[overlap, None]
        box = (boxes[overlap] * weights).sum(0) / weights.sum()
        (lx, ly), (rx, ry) = (eyes[overlap] * weights[:, :, None]).sum(0) / weights.sum()
        faces.append(Face(*map(float, box), float(scores[0]), ((float(lx), float(ly)), (float(rx), float(ry)))))
        boxes, scores, eyes = boxes[~overlap], scores[~overlap], eyes[~overlap]
    return faces


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x, y, w, h)`` box with each of ``boxes`` (N, 4)."""
    ix = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter + 1e-12)


class FaceDetector:
    """``detector(rgb_image) -> [Face]``, left to right: every face whose crop is about
    ``min_face_size`` px or more (:data:`SIZE_SLACK`) scoring ``min_score`` or more, the ``max_faces``
    best-scoring kept. Safe to call from several threads (one OpenVINO request per thread,
    ``threads`` CPU threads between them)."""

    def __init__(
        self,
        threads: int = 2,
        min_score: float = MIN_SCORE,
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        max_faces: int = DEFAULT_MAX_FACES,
    ):
        import openvino as ov

        core = ov.Core()
        # f32 pinned, as in gclf.export.runtime: CPUs with bf16 would otherwise run it in bf16 and move scores
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        self._model = core.compile_model(str(MODEL_PATH), "CPU", config)
        self._outputs = [
            self._model.output(name) for name in ("reshaped_regressor_face_4", "reshaped_classifier_face_4")
        ]
        self._local = threading.local()
        self._anchors = anchors()
        self.min_score, self.min_face_size, self.max_faces = min_score, min_face_size, max_faces

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self._local, "request"):
            self._local.request = self._model.create_infer_request()
        result = self._local.request.infer({0: pixels})
        return result[self._outputs[0]].reshape(-1, 16), result[self._outputs[1]].reshape(-1)

    def in_photo(self, path: str) -> tuple[Image.Image, tuple[float, float], list[Face]]:
        """The photo at ``path`` as :func:`gclf.faces.photos.open_photo` gives it (upright, reduced), its
        factors (x, y) to the whole photo's pixels, and the faces in it (in the reduced copy's pixels)."""
        photo, (sx, sy) = open_photo(path)
        return photo, (sx, sy), self(photo, max(sx, sy))

    def __call__(self, image: Image.Image, pixel_scale: float = 1.0) -> list[Face]:
        """The faces in ``image``, a copy of a photo reduced ``pixel_scale`` times
        (:func:`gclf.faces.photos.open_photo`): ``min_face_size`` counts the photo's own pixels."""
        smallest = SIZE_SLACK * self.min_face_size / pixel_scale
        near, far = [], []
        for left, top, side in detection_windows(image.width, image.height, smallest):
            (far if side > max(image.size) else near).append(self.in_window(image, left, top, side))
        boxes, scores, eyes = (np.concatenate(parts) for parts in zip(NO_DETECTIONS, *near))
        far_boxes, far_scores, far_eyes = (np.concatenate(parts) for parts in zip(NO_DETECTIONS, *far))
        # a face that a nearer view found has a finer box and eyes there (averaged with a far view's,
        # a turned face's roll came out 16 degrees, not 25): far views add the faces only they found
        new = np.array([not (box_iou(box, boxes) > NMS_IOU).any() for box in far_boxes], bool)
        boxes, scores = np.concatenate([boxes, far_boxes[new]]), np.concatenate([scores, far_scores[new]])
        faces = weighted_nms(boxes, scores, np.concatenate([eyes, far_eyes[new]]))
        faces = [f for f in faces if crop_square(f)[2] >= smallest][: self.max_faces]  # best scores first
        return sorted((ordered_eyes(f) for f in faces), key=lambda f: (f.x, f.y))

    def in_window(
        self, image: Image.Image, left: float, top: float, side: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4), scores (N,) and eye pairs (N, 2, 2) the detector finds in one view, in the
        image's pixels, scoring ``min_score`` or more and not cut by an inner tile edge."""
        raw, logits = self._run(window_input(image, left, top, side))
        scores = 1 / (1 + np.exp(-np.clip(logits, -80, 80)))
        keep = scores >= self.min_score
        offsets, centres = raw[keep] / INPUT_SIZE, self._anchors[keep]
        cx, cy = offsets[:, 0] + centres[:, 0], offsets[:, 1] + centres[:, 1]
        boxes = np.stack([cx - offsets[:, 2] / 2, cy - offsets[:, 3] / 2, offsets[:, 2], offsets[:, 3]], 1)
        eyes = offsets[:, 4:8].reshape(-1, 2, 2) + centres[:, None, :]  # keypoints 0 and 1: the eyes
        # a tile's inner edges cut faces that a neighbouring tile holds whole; other views have none
        whole = ~cut_by_tile_edge(boxes, left, top, side, image.width, image.height)
        return boxes[whole] * side + [left, top, 0, 0], scores[keep][whole], eyes[whole] * side + [left, top]


def cut_by_tile_edge(boxes: np.ndarray, left: float, top: float, side: float, width: int, height: int) -> np.ndarray:
    """Which boxes (unit coordinates of the tile) touch a tile edge that lies inside the image: part
    of their face is outside the tile, and a neighbouring tile holds it whole."""
    margin = EDGE_FRACTION
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    return (
        ((x0 < margin) & (left > 0))
        | ((y0 < margin) & (top > 0))
        | ((x1 > 1 - margin) & (left + side < width))
        | ((y1 > 1 - margin) & (top + side < height))
    )


def ordered_eyes(face: Face) -> Face:
    """``face`` with the eye on the image's left first."""
    left, right = sorted(face.eyes)
    return replace(face, eyes=(left, right))


def crop_square(face: Face) -> tuple[float, float, float]:
    """``(centre x, centre y, side)`` of the UTKFace-like crop around a detected face."""
    d = face.size
    return face.x + face.w / 2 + CROP_SHIFT[0] * d, face.y + face.h / 2 + CROP_SHIFT[1] * d, CROP_SCALE * d


def levelling_angle(face: Face, level_from: float = LEVEL_FROM_DEGREES) -> float:
    """Degrees (counter-clockwise) :func:`face_crop` turns the face by: its roll, or 0 under ``level_from``."""
    return face.roll_degrees if abs(face.roll_degrees) >= level_from else 0.0


def face_crop(
    image: Image.Image, face: Face, image_size: int, level_from: float = LEVEL_FROM_DEGREES, margin: bool = True
) -> np.ndarray:
    """(S, S, 3) uint8: the face's UTKFace-like crop (``margin=False``: the detector's box, made
    square), turned so the eyes are level when they are ``level_from`` degrees or more off (UTKFace's
    crops are levelled), resized as :func:`gclf.data.images.decode_image` resizes; parts outside the
    photo are black."""
    cx, cy, side = crop_square(face) if margin else (face.x + face.w / 2, face.y + face.h / 2, face.size)
    angle = levelling_angle(face, level_from)
    if angle:
        reach = side * math.sqrt(2) / 2  # a square this large still covers the crop once turned
        around = image.crop((round(cx - reach), round(cy - reach), round(cx + reach), round(cy + reach)))
        centre = (cx - round(cx - reach), cy - round(cy - reach))
        image = around.rotate(angle, Image.BILINEAR, center=centre)
        cx, cy = centre
    crop = image.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    return np.asarray(crop.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None))
