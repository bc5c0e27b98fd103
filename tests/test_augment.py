"""Training augmentation: both backends (per-image v2, batched) draw from the same distributions,
measured on their outputs; the same for both classes unless per-class augmentation is asked for."""

import dataclasses

import pytest
import torch
from torchvision.transforms import v2

from gclf.params import AugmentParams
from gclf.train.augment import batch_augmenter, class_transforms, stronger, train_transform

SIZE, N = 32, 256  # image side, augmented copies per backend
OFF = AugmentParams(crop_scale=1.0, hflip=0.0, rotation=0.0, color_jitter=0.0, grayscale=0.0, erasing=0.0)
ERASING_ONLY = dataclasses.replace(OFF, erasing=0.3)


pytestmark = pytest.mark.usefixtures("one_thread")


def only(**strengths) -> AugmentParams:
    return dataclasses.replace(OFF, **strengths)


def coordinate_image() -> torch.Tensor:
    """Red rises left to right, green top to bottom: a pixel's value says where it came from."""
    ramp = torch.linspace(0, 255, SIZE)
    red, green = ramp.expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE)
    return torch.stack([red, green, torch.full_like(red, 128)]).round().to(torch.uint8)


def colour_image() -> torch.Tensor:
    """A muted orange with a vertical shade, so that every colour op changes it."""
    shade = torch.linspace(0.7, 1.0, SIZE)[:, None].expand(SIZE, SIZE)
    return torch.stack([shade * 200, shade * 130, shade * 70]).round().to(torch.uint8)


def white_image() -> torch.Tensor:
    return torch.full((3, SIZE, SIZE), 255, dtype=torch.uint8)


def augment_batched(p, image, labels=None, seed=0) -> torch.Tensor:
    labels = torch.zeros(N) if labels is None else labels
    batch = image.expand(len(labels), -1, -1, -1)
    return batch_augmenter(p, SIZE, labels)(batch, labels, torch.Generator().manual_seed(seed))


def augment_per_image(p, image, labels=None, seed=0) -> torch.Tensor:
    labels = torch.zeros(N) if labels is None else labels
    transforms = class_transforms(p, SIZE, labels)
    torch.manual_seed(seed)
    return torch.stack([transforms[int(y)](image) for y in labels])


def both_backends(p, image, labels=None) -> dict[str, torch.Tensor]:
    return {"batched": augment_batched(p, image, labels), "per-image": augment_per_image(p, image, labels)}


def kept_area(out: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of the coordinate image's area the crop kept: the red ramp spans
    255 times the kept width between the first and last column, green likewise in height."""
    width = (out[:, 0, :, -1] - out[:, 0, :, 0]).mean(1)
    height = (out[:, 1, -1, :] - out[:, 1, 0, :]).mean(1)
    return width * height


def flipped(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0, :, 0].mean(1) > out[:, 0, :, -1].mean(1)


def rotation_degrees(out: torch.Tensor) -> torch.Tensor:
    """Per sample, the direction of the red ramp's gradient (0 unrotated), fitted on a central disc
    that rotation never leaves."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) - (SIZE - 1) / 2, torch.arange(SIZE) - (SIZE - 1) / 2, indexing="ij")
    disc = xs**2 + ys**2 < (SIZE / 2 - 2) ** 2
    design = torch.stack([xs[disc], ys[disc], torch.ones_like(xs[disc])], 1)
    slope_x, slope_y, _ = (torch.linalg.pinv(design) @ out[:, 0][:, disc].T).unbind(0)
    return torch.rad2deg(torch.atan2(slope_y, slope_x))


def erased(out: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of pixels erased to 0 (of an image with no black pixels)."""
    return (out == 0).all(1).float().mean((1, 2))


def erasing_probability(transform: v2.Compose) -> float:
    return next(op.p for op in transform.transforms if isinstance(op, v2.RandomErasing))


# --- both backends -----------------------------------------------------------------------------


def test_crop_keeps_the_same_range_of_areas_in_both_backends():
    for name, out in both_backends(only(crop_scale=0.5), coordinate_image()).items():
        area = kept_area(out)
        assert area.min() > 0.47 and area.max() < 1.01, name
        # uniform in [0.5, 1] less the large areas whose drawn aspect ratio does not fit: mean ~0.73,
        # standard deviation ~0.14 (v2 measures a little smaller: it crops whole pixels of a 32 px image)
        assert abs(area.mean() - 0.73) < 0.03 and abs(area.std() - 0.14) < 0.02, name


def test_flip_rate_is_the_flip_probability_in_both_backends():
    for name, out in both_backends(only(hflip=0.3), coordinate_image()).items():
        assert abs(flipped(out).float().mean() - 0.3) < 0.08, name


def test_rotation_angles_are_uniform_within_the_range_in_both_backends():
    for name, out in both_backends(only(rotation=30.0), coordinate_image()).items():
        angle = rotation_degrees(out)
        assert angle.abs().max() < 31.5 and angle.abs().max() > 27, name
        assert abs(angle.abs().mean() - 15) < 2, name  # uniform in [-30, 30]
        assert abs((angle > 0).float().mean() - 0.5) < 0.1, name


def test_rotation_fills_what_lies_outside_the_crop_with_zeros_in_both_backends():
    outs = both_backends(only(crop_scale=0.5, rotation=45.0), white_image())
    black = {name: erased(out).mean() for name, out in outs.items()}
    assert black["per-image"] > 0.1
    assert abs(black["batched"] - black["per-image"]) < 0.02


def colour_stats(out: torch.Tensor) -> torch.Tensor:
    """Per sample: brightness, contrast (which brightness does not change), colourfulness, and how
    far the mean colour moved around the grey axis from the batch's average (hue and saturation)."""
    grey = out.mean(1)
    channel_means = out.mean((2, 3))
    chroma = channel_means - channel_means.mean(1, keepdim=True)
    shift = (chroma - chroma.mean(0)).norm(dim=1)
    contrast = grey.std((1, 2)) / grey.mean((1, 2))
    return torch.stack([grey.mean((1, 2)), contrast, out.std(1).mean((1, 2)), shift], 1)


def test_colour_jitter_spreads_colours_alike_in_both_backends():
    # hue moves around a circle in the batched backend, around v2's HSV hexagon per image: the
    # channels share a shift differently (orange: less green, more red and blue), by as much overall
    stats = {name: colour_stats(out) for name, out in both_backends(only(color_jitter=0.4), colour_image()).items()}
    assert ((stats["batched"].mean(0) - stats["per-image"].mean(0)).abs() < 0.02).all()
    spread = stats["batched"].std(0) / stats["per-image"].std(0)
    assert ((spread > 0.8) & (spread < 1.25)).all(), spread


def test_grayscale_rate_is_the_grayscale_probability_in_both_backends():
    for name, out in both_backends(only(grayscale=0.3), colour_image()).items():
        grey = (out - out.mean(1, keepdim=True)).abs().amax((1, 2, 3)) < 1e-4
        assert abs(grey.float().mean() - 0.3) < 0.08, name


def test_erasing_rate_and_box_sizes_match_in_both_backends():
    areas = {}
    for name, out in both_backends(only(erasing=0.5), white_image()).items():
        area = erased(out)
        assert abs((area > 0).float().mean() - 0.5) < 0.08, name
        areas[name] = area[area > 0].mean()
    assert abs(areas["batched"] - 0.175) < 0.03  # uniform in [0.02, 0.33]
    assert abs(areas["batched"] - areas["per-image"]) < 0.03


def test_minority_class_is_augmented_harder_in_both_backends():
    labels = (torch.arange(N) % 4 == 0).float()  # label 1 is the minority
    p = dataclasses.replace(ERASING_ONLY, minority_strength=3.0)  # minority: erasing 0.9
    for name, out in both_backends(p, white_image(), labels).items():
        erased_rate = (erased(out) > 0).float()
        assert abs(erased_rate[labels == 1].mean() - 0.9) < 0.1, name
        assert abs(erased_rate[labels == 0].mean() - 0.3) < 0.08, name


# --- the batched backend -----------------------------------------------------------------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batched_zero_strengths_give_the_identity_as_float(memory_format):
    x = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8).contiguous(memory_format=memory_format)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = batch_augmenter(dataclasses.replace(OFF, minority_strength=3.0), SIZE, labels)(x, labels, torch.Generator())
    assert torch.equal(out, x.float() / 255)


def test_batched_samples_draw_their_own_parameters_from_the_seed():
    labels = torch.zeros(8)
    first, again, other = (augment_batched(AugmentParams(erasing=0.5), colour_image(), labels, s) for s in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    for i in range(len(first)):
        for j in range(i):
            assert not torch.equal(first[i], first[j])


def test_batched_output_has_the_asked_size_dtype_and_range():
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = batch_augmenter(AugmentParams(erasing=0.5), SIZE, torch.zeros(2))(x, torch.zeros(2), torch.Generator())
    assert out.shape == (2, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_is_the_same_on_cuda_as_on_cpu():
    x = torch.randint(0, 256, (16, 3, SIZE, SIZE), dtype=torch.uint8)
    labels = (torch.arange(16) % 3 == 0).float()
    augment = batch_augmenter(AugmentParams(erasing=0.5, minority_strength=2.0), SIZE, labels)
    cpu = augment(x, labels, torch.Generator().manual_seed(0))
    cuda = augment(x.cuda(), labels.cuda(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-3, rtol=0)


# --- the per-image backend and the per-class params --------------------------------------------


def test_zero_strengths_give_the_identity_as_float():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(train_transform(OFF, 8)(image), image.float() / 255)


def test_both_classes_share_one_transform_by_default():
    female, male = class_transforms(ERASING_ONLY, 8, torch.tensor([0.0, 0.0, 1.0]))
    assert female is male


def test_per_class_option_augments_only_the_minority_class_harder():
    p = dataclasses.replace(ERASING_ONLY, minority_strength=2.0)
    few_females = class_transforms(p, 8, torch.tensor([0.0, 0.0, 1.0]))
    assert [erasing_probability(t) for t in few_females] == [0.3, 0.6]
    few_males = class_transforms(p, 8, torch.tensor([1.0, 1.0, 0.0]))
    assert [erasing_probability(t) for t in few_males] == [0.6, 0.3]


def test_stronger_caps_every_strength_at_its_limit():
    p = stronger(AugmentParams(crop_scale=0.5, rotation=100.0, color_jitter=0.6, grayscale=0.5, erasing=0.5), 5.0)
    assert (p.crop_scale, p.rotation, p.color_jitter, p.grayscale, p.erasing) == (0.1, 180.0, 1.0, 1.0, 1.0)
