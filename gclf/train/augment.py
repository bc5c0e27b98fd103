"""Training augmentation of decoded uint8 images, the same for both classes by default.

Two backends draw from the same distributions (``augment.backend``): per image with torchvision v2
in the DataLoader (:func:`class_transforms`, the reference), or per batch on the training device
(:func:`batch_augmenter`, the default): one affine ``grid_sample`` for crop, flip and rotation, one
per-sample 3x3 colour matrix for jitter and grayscale, a box mask for erasing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torchvision.transforms import v2

from gclf.params import AugmentParams

Strength = Callable[[str], torch.Tensor]  # a param's value per sample, by its label

CROP_RATIO = (0.9, 1.1)  # width / height of the random resized crop, drawn log-uniformly
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing's defaults
TRIES = 10  # torchvision's attempts at a crop or an erased box that fits before it falls back
GREY = (0.2989, 0.587, 0.114)  # torchvision's luma weights, for grayscale, saturation and contrast
BILINEAR, BORDER = 0, 1  # aten grid_sampler_2d's interpolation and padding modes


def train_transform(p: AugmentParams, image_size: int) -> v2.Compose:
    """Random resized crop, flip, rotation, colour jitter, grayscale, then float [0, 1] and erasing.

    Each op with strength 0 is left out, so ``crop_scale=1`` and zeros everywhere give the identity.
    """
    ops: list = []
    if p.crop_scale < 1:
        ops.append(v2.RandomResizedCrop(image_size, scale=(p.crop_scale, 1.0), ratio=CROP_RATIO, antialias=True))
    if p.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p.hflip))
    if p.rotation > 0:
        ops.append(v2.RandomRotation(p.rotation))
    if p.color_jitter > 0:
        j = p.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    if p.grayscale > 0:
        ops.append(v2.RandomGrayscale(p.grayscale))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if p.erasing > 0:
        ops.append(v2.RandomErasing(p.erasing, scale=ERASE_SCALE, ratio=ERASE_RATIO))
    return v2.Compose(ops)


def stronger(p: AugmentParams, factor: float) -> AugmentParams:
    """``p`` with crop, rotation, jitter, grayscale and erasing ``factor`` times as strong (capped)."""
    return dataclasses.replace(
        p,
        crop_scale=max(0.1, 1 - (1 - p.crop_scale) * factor),
        rotation=min(180.0, p.rotation * factor),
        color_jitter=min(1.0, p.color_jitter * factor),
        grayscale=min(1.0, p.grayscale * factor),
        erasing=min(1.0, p.erasing * factor),
    )


def class_params(p: AugmentParams, labels: torch.Tensor) -> tuple[AugmentParams, AugmentParams]:
    """The augmentation params of label 0 and of label 1.

    ``p`` for both unless ``p.minority_strength > 1``: then the class with fewer train ``labels``
    gets :func:`stronger` augmentation, as one reference project did. That is a shortcut risk (the
    network can read the class off augmentation artefacts), so it is opt-in.
    """
    if p.minority_strength == 1:
        return p, p
    strong = stronger(p, p.minority_strength)
    minority = int(labels.float().mean() < 0.5)  # fewer positives than negatives: label 1
    return (p, strong) if minority == 1 else (strong, p)


def class_transforms(p: AugmentParams, image_size: int, labels: torch.Tensor) -> tuple[v2.Compose, v2.Compose]:
    """The per-image training transform of label 0 and of label 1 (one shared object when alike)."""
    label0, label1 = class_params(p, labels)
    first = train_transform(label0, image_size)
    return first, first if label1 == label0 else train_transform(label1, image_size)


def batch_augmenter(p: AugmentParams, image_size: int, train_labels: torch.Tensor) -> BatchAugment:
    """The batched counterpart of :func:`class_transforms`, called once per training batch."""
    return BatchAugment(class_params(p, train_labels), image_size)


# uniform numbers each op draws per sample, in this order; an op that is off draws none
DRAWS = {
    "crop_scale": 2 * TRIES + 2,  # areas, ratios, then the box's position
    "hflip": 1,
    "rotation": 1,
    "color_jitter": 4,  # brightness, contrast, saturation, hue
    "grayscale": 1,
    "erasing": 1 + 2 * TRIES + 2,  # whether, areas, ratios, then the box's position
}


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """:func:`train_transform`'s ops on a whole batch, each sample with its own random parameters.

    ``per_label`` holds the params of label 0 and of label 1, picked per sample by its label. Call it
    with a uint8 batch (B, 3, H, W) on any device (channels-last too), its float labels (B,) on that
    device and a CPU generator; it returns a new float32 (B, 3, image_size, image_size) in [0, 1] on
    the batch's device, channels-last as the model wants it. Every random number is drawn from
    ``generator`` as one small (B, k) CPU tensor, so one seed gives the same batch on CPU and CUDA up
    to float rounding.

    The intermediate batches (float input, sampling grid, warped, recoloured) live in scratch
    tensors kept from one call to the next. On the CPU a fresh tensor of a batch's size (38 MB at
    64 x 224 px) costs more than the op that fills it: glibc maps blocks over 32 MiB afresh, and
    the kernel zeroes every page on first touch (measured: 24 ms for ``x.float()`` into a new
    tensor, 8 ms into a kept one).
    """

    per_label: tuple[AugmentParams, AugmentParams]
    image_size: int
    _scratch: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def _kept(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The float scratch tensor ``name`` of ``shape`` on ``device``, reused while those stay the same."""
        kept = self._scratch.get(name)
        if kept is None or kept.shape != shape or kept.device != device:
            kept = self._scratch[name] = torch.empty(shape, device=device)
        return kept

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draws = self._draw(len(x), generator, x.device)
        is_label1 = labels > 0.5

        def strength(name: str) -> torch.Tensor:
            label0, label1 = (float(getattr(q, name)) for q in self.per_label)
            return torch.where(is_label1, label1, label0)

        x = self._kept("input", x.shape, x.device).copy_(x)
        geometric = any(name in draws for name in ("crop_scale", "hflip", "rotation"))
        if geometric or x.shape[-2:] != (self.image_size, self.image_size):
            x = self._warp(x, draws, strength)
        if "color_jitter" in draws or "grayscale" in draws:
            x = _recolour(x, *_colour_transform(x, draws, strength), out=self._kept("recoloured", x.shape, x.device))
        else:
            x = x.div_(255)
        x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)  # the one new tensor: the caller's
        if "erasing" in draws:
            _erase(x, draws["erasing"], strength("erasing"))
        return x

    def _draw(self, n: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Each op's uniform numbers, (n, DRAWS[op]), for the ops that any label turns on."""
        off = {"crop_scale": 1.0}  # the value that turns an op off; 0 for the others
        widths = {
            name: k for name, k in DRAWS.items() if any(getattr(q, name) != off.get(name, 0.0) for q in self.per_label)
        }
        uniform = torch.rand(n, sum(widths.values()), generator=generator).to(device)
        return dict(zip(widths, uniform.split(list(widths.values()), dim=1)))

    def _warp(self, x: torch.Tensor, draws: dict[str, torch.Tensor], strength: Strength) -> torch.Tensor:
        """Crop, flip and rotate as one bilinear resampling onto the output grid.

        grid_sample interpolates bilinearly without antialiasing (v2 resizes with antialiasing and
        rotates nearest-neighbour). That is acceptable here: the training images are decoded at
        image_size, so the crop (at least crop_scale of the area) is magnified, by at most
        1/sqrt(crop_scale * 0.9) per side, never shrunk, and antialiasing only matters when shrinking
        (an input larger than image_size would alias). Border padding matches v2's crop-then-resize
        at the image edge; what rotation brings in from outside the crop is then zeroed, as
        v2.RandomRotation fills 0.
        """
        n, _, height, width = x.shape
        ones = torch.ones(n, device=x.device)
        centre, half = torch.zeros(n, 2, device=x.device), torch.ones(n, 2, device=x.device)
        if "crop_scale" in draws:
            centre, half = _crop_boxes(draws["crop_scale"], strength("crop_scale"), height / width)
        flip = torch.where(draws["hflip"][:, 0] < strength("hflip"), -ones, ones) if "hflip" in draws else ones
        angle = torch.zeros_like(ones)
        if "rotation" in draws:
            angle = (2 * draws["rotation"][:, 0] - 1) * strength("rotation") * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        # output grid -> rotated, flipped crop -> input, in [-1, 1] coordinates: v2.rotate's sense (counter-clockwise)
        to_crop = torch.stack([flip, ones], 1).unsqueeze(2) * torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
        size = self.image_size
        grid = _affine_grid(
            half.unsqueeze(2) * to_crop, centre, size, out=self._kept("grid", (n, size, size, 2), x.device)
        )
        out = self._kept("warped", (n, x.shape[1], size, size), x.device)
        # F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False), into a kept tensor
        torch.ops.aten.grid_sampler_2d.out(x, grid, BILINEAR, BORDER, False, out=out)
        if "rotation" in draws:
            out.masked_fill_(_outside_unit_square(to_crop, self.image_size).unsqueeze(1), 0)
        return out


def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    """The output pixels' centres in [-1, 1] coordinates (grid_sample's align_corners=False)."""
    return (torch.arange(size, device=device) * 2 + 1) / size - 1


def _affine_grid(
    matrix: torch.Tensor, offset: torch.Tensor, size: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """F.affine_grid's (B, size, size, 2) grid for ``matrix`` (B, 2, 2) and ``offset`` (B, 2), as the sum
    of a part per column and a part per row: one pass over the grid, 8x faster than it on the CPU."""
    centres = _pixel_centres(size, matrix.device)
    per_column = matrix[:, :, 0, None] * centres
    per_row = matrix[:, :, 1, None] * centres + offset[:, :, None]
    return torch.add(per_column.transpose(1, 2)[:, None], per_row.transpose(1, 2)[:, :, None], out=out)


def _outside_unit_square(matrix: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size): where the output grid, mapped by ``matrix`` (B, 2, 2), leaves [-1, 1]^2.

    A row of the grid meets the mapped square in one interval of columns (the square is convex), so
    each row's bounds are solved for, (B, size) numbers, and the pixels compared with them: a few
    passes over booleans instead of many over the (B, size, size, 2) floats of the mapped grid.
    """
    centres = _pixel_centres(size, matrix.device)
    low = torch.full((len(matrix), size), -math.inf, device=matrix.device)
    high = torch.full_like(low, math.inf)
    for along_columns, along_rows in (row.unbind(1) for row in matrix.unbind(1)):  # |a * u + b * v| <= 1
        a, offset = along_columns[:, None], along_rows[:, None] * centres  # (B, 1), (B, size)
        steep = a.abs() > 1e-12
        ends = ((-1 - offset) / torch.where(steep, a, 1.0), (1 - offset) / torch.where(steep, a, 1.0))
        row_inside = offset.abs() <= 1  # where a == 0 the row is inside for every column, or for none
        low = torch.maximum(low, torch.where(steep, torch.minimum(*ends), torch.where(row_inside, -math.inf, math.inf)))
        high = torch.minimum(
            high, torch.where(steep, torch.maximum(*ends), torch.where(row_inside, math.inf, -math.inf))
        )
    return (centres < low[:, :, None]) | (centres > high[:, :, None])


def _uniform(u: torch.Tensor, lo: float | torch.Tensor, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _log_uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return _uniform(u, math.log(lo), math.log(hi)).exp()


def _first_fitting(fits: torch.Tensor, *sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Whether any of the (B, TRIES) tries fits, and each of ``sizes`` at the first that does."""
    first = fits.int().argmax(1, keepdim=True)  # argmax returns the first of equal maxima
    return fits.any(1), *(size.gather(1, first).squeeze(1) for size in sizes)


def _crop_boxes(u: torch.Tensor, min_area: torch.Tensor, aspect: float) -> tuple[torch.Tensor, torch.Tensor]:
    """v2.RandomResizedCrop's boxes as (centre, half size) in [-1, 1] coordinates, each (B, 2).

    Area uniform in [min_area, 1] of the image, width/height log-uniform in CROP_RATIO, the first of
    TRIES that fits, else the whole image (torchvision's fallback for a square image); the position
    is continuous where torchvision's is whole pixels. ``aspect`` is the image's height / width.
    """
    area = _uniform(u[:, :TRIES], min_area.unsqueeze(1), 1.0)
    ratio = _log_uniform(u[:, TRIES : 2 * TRIES], *CROP_RATIO)
    width, height = (area * ratio * aspect).sqrt(), (area / ratio / aspect).sqrt()  # fractions of the image
    found, width, height = _first_fitting((width <= 1) & (height <= 1), width, height)
    size = torch.where(found.unsqueeze(1), torch.stack([width, height], 1), 1.0)
    corner = u[:, 2 * TRIES :] * (1 - size)
    return 2 * corner + size - 1, size


def _colour_transform(
    x: torch.Tensor, draws: dict[str, torch.Tensor], strength: Strength
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the 3x3 matrix A and bias t (in [0, 1] units) of jitter then grayscale.

    v2.ColorJitter applies brightness, contrast, saturation and hue in a random order, clamping
    after each. Without the clamps they (nearly) commute: each keeps grey grey and scales or turns
    the colour around the grey axis; so one fixed order and one final clamp stand in for them.
    Hue is a rotation about the grey axis, a linear stand-in for v2's HSV hue shift (on random
    colours it was closer to it than a rotation in YIQ).
    """
    n = len(x)
    eye = torch.eye(3, device=x.device).expand(n, 3, 3)
    grey = torch.tensor(GREY, device=x.device)
    to_grey = torch.ones(3, 1, device=x.device) * grey  # every channel := luma
    matrix, bias = eye, torch.zeros(n, 3, device=x.device)
    if "color_jitter" in draws:
        j = strength("color_jitter")
        brightness, contrast, saturation = (1 + j.unsqueeze(1) * (2 * draws["color_jitter"][:, :3] - 1)).unbind(1)
        hue = j.div(4).clamp(max=0.5) * (2 * draws["color_jitter"][:, 3] - 1)
        mixed = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * to_grey
        matrix = brightness[:, None, None] * _hue_rotation(hue) @ mixed
        mean = matrix @ x.mean((2, 3)).div(255).unsqueeze(2)  # (B, 3, 1): the image's mean colour so far
        bias = (1 - contrast).unsqueeze(1) * (grey @ mean).expand(n, 3)  # contrast blends with mean luma
        matrix = contrast[:, None, None] * matrix
    if "grayscale" in draws:
        greyed = torch.where((draws["grayscale"][:, 0] < strength("grayscale"))[:, None, None], to_grey, eye)
        matrix, bias = greyed @ matrix, (greyed @ bias.unsqueeze(2)).squeeze(2)
    return matrix, bias


def _hue_rotation(hue: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations about the grey axis by ``hue`` turns (Rodrigues' formula)."""
    k = 1 / math.sqrt(3)
    cross = torch.tensor([[0, -k, k], [k, 0, -k], [-k, k, 0]], device=hue.device)  # v -> axis x v
    angle = (2 * math.pi * hue)[:, None, None]
    return torch.eye(3, device=hue.device) + angle.sin() * cross + (1 - angle.cos()) * (cross @ cross)


def _recolour(
    x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``matrix @ pixel / 255 + bias`` for every pixel of the 0-255 float batch ``x``, clamped to [0, 1]
    (into ``out``, contiguous like ``x``, when given)."""
    n, c, height, width = x.shape
    flat = None if out is None else out.view(n, c, height * width)
    recoloured = torch.baddbmm(bias.unsqueeze(2), matrix / 255, x.reshape(n, c, height * width), out=flat)
    return recoloured.clamp_(0, 1).view(n, c, height, width)


def _erase(x: torch.Tensor, u: torch.Tensor, p: torch.Tensor) -> None:
    """v2.RandomErasing with value 0, in place: with probability ``p`` per sample, the first of TRIES
    boxes (area uniform in ERASE_SCALE of the image, height/width log-uniform in ERASE_RATIO) that
    fits; none when no try does."""
    _, _, height, width = x.shape
    area = _uniform(u[:, 1 : 1 + TRIES], *ERASE_SCALE) * (height * width)
    ratio = _log_uniform(u[:, 1 + TRIES : 1 + 2 * TRIES], *ERASE_RATIO)
    box_h, box_w = (area * ratio).sqrt().round(), (area / ratio).sqrt().round()
    found, box_h, box_w = _first_fitting((box_h < height) & (box_w < width), box_h, box_w)
    top = (u[:, -2] * (height - box_h + 1)).floor()
    left = (u[:, -1] * (width - box_w + 1)).floor()
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    erase = (u[:, 0] < p) & found
    x.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]).unsqueeze(1), 0)
