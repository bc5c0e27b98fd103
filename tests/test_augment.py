"""Training augmentation: the same for both classes unless per-class augmentation is asked for."""

import dataclasses

import torch
from torchvision.transforms import v2

from gclf.augment import class_transforms, stronger, train_transform
from gclf.params import AugmentParams

ERASING_ONLY = AugmentParams(crop_scale=1.0, hflip=0.0, rotation=0.0, color_jitter=0.0, grayscale=0.0, erasing=0.3)


def erasing_probability(transform: v2.Compose) -> float:
    return next(op.p for op in transform.transforms if isinstance(op, v2.RandomErasing))


def test_zero_strengths_give_the_identity_as_float():
    none = dataclasses.replace(ERASING_ONLY, erasing=0.0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(train_transform(none, 8)(image), image.float() / 255)


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
