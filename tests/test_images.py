"""Images as the model sees them: decoding any mode and orientation, the decode cache, the training dataset."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import write_image

from gclf.data import images
from gclf.data.dataset import ImageDataset
from gclf.data.images import load_images
from gclf.data.manifest import DataError


def write_modes(folder):
    """The same 8 x 8 picture (top half dark, bottom half bright) in awkward modes."""
    folder.mkdir(parents=True, exist_ok=True)
    gray = np.vstack([np.full((4, 8), 40, np.uint8), np.full((4, 8), 200, np.uint8)])
    rgb = Image.fromarray(np.stack([gray] * 3, axis=-1))
    images = {
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P", palette=Image.ADAPTIVE),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
    }
    files = []
    for mode, image in images.items():
        files.append(str(folder / f"{mode.replace(';', '_')}.png"))
        image.save(files[-1])
    files.append(str(folder / "cmyk.jpg"))
    rgb.convert("CMYK").save(files[-1], quality=100)
    return files


def test_load_images_converts_every_mode_to_rgb(tmp_path):
    files = write_modes(tmp_path)
    with Image.open(files[4]) as image:
        assert image.mode == "I;16"
    images = load_images(files, 8, cache_dir=None)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 8, 8)
    top, bottom = images[:, :, 1].float().mean(dim=(1, 2)), images[:, :, 6].float().mean(dim=(1, 2))
    assert torch.all((top - 40).abs() < 8) and torch.all((bottom - 200).abs() < 8), (top, bottom)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_images([str(tmp_path / "clear.png")], 4).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = (255, 0, 0)  # left half red, right half blue as stored
    pixels[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_images([str(tmp_path / "rotated.jpg")], 16)[0].int()
    assert image[0, 2].float().mean() > 200 and image[2, 2].float().mean() < 50  # top row red
    assert image[2, 13].float().mean() > 200 and image[0, 13].float().mean() < 50  # bottom row blue


def test_load_images_cache_hit_returns_the_same_tensor_in_the_asked_order(tmp_path, monkeypatch):
    paths = [str(write_image(tmp_path / f"{i}.png", i, size=12)) for i in range(4)]
    cache = tmp_path / "cache"
    first = load_images(paths, 8, str(cache))
    assert len(list(cache.glob("*.npy"))) == 1

    def no_decoding(path, size):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    assert torch.equal(load_images(paths, 8, str(cache)), first)
    reordered = load_images(paths[::-1] + paths[:1], 8, str(cache))
    assert torch.equal(reordered, torch.cat([first.flip(0), first[:1]]))
    monkeypatch.undo()
    assert load_images(paths, 10, str(cache)).shape == (4, 3, 10, 10)  # another size: another entry
    assert len(list(cache.glob("*.npy"))) == 2


def test_load_images_of_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="dvc repro split"):
        load_images([str(tmp_path / "gone.png")], 8)


def test_image_dataset_items_are_float():
    images = torch.tensor([[[[0, 255]]] * 3, [[[255, 51]]] * 3], dtype=torch.uint8)  # (2, 3, 1, 2)
    dataset = ImageDataset(images, torch.tensor([0, 1]))
    image, label = dataset[1]
    assert image.dtype == torch.float32 and torch.allclose(image[0, 0], torch.tensor([1.0, 0.2]))
    assert label.dtype == torch.float32 and label.item() == 1.0
    flipped = ImageDataset(images, torch.tensor([0, 1]), transforms=[lambda x: x.flip(-1)] * 2)
    assert torch.allclose(flipped[1][0][0, 0], torch.tensor([0.2, 1.0]))
    assert len(flipped) == 2
