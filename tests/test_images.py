"""Images as the model sees them: decoding any mode and orientation, the decoded-image store, the training dataset."""

import os

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


def test_store_hit_decodes_nothing_and_keeps_the_asked_order(tmp_path, monkeypatch):
    paths = [str(write_image(tmp_path / f"{i}.png", i, size=12)) for i in range(4)]
    cache = tmp_path / "cache"
    first = load_images(paths, 8, str(cache))
    assert len(list(cache.glob("*.u8"))) == 1
    assert first.is_contiguous(memory_format=torch.channels_last)  # the store's NHWC bytes, as the model trains

    def no_decoding(path, size):
        raise AssertionError("decoded again despite the store")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    assert torch.equal(load_images(paths, 8, str(cache)), first)
    monkeypatch.undo()
    reordered = load_images(paths[::-1] + paths[:1], 8, str(cache))  # the store holds the asked order
    assert torch.equal(reordered, torch.cat([first.flip(0), first[:1]]))
    assert load_images(paths, 10, str(cache)).shape == (4, 3, 10, 10)  # another size: another store
    assert len(list(cache.glob("*.u8"))) == 3


def test_store_is_keyed_on_content_not_on_mtime(tmp_path):
    path = write_image(tmp_path / "a.png", 0, size=12)
    cache = str(tmp_path / "cache")
    before = load_images([str(path)], 8, cache)
    stat = path.stat()
    write_image(path, 1, size=12)  # other pixels, same name, same size and mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = load_images([str(path)], 8, cache)
    assert torch.equal(after, load_images([str(path)], 8))  # what a fresh decode gives
    assert not torch.equal(after, before)


def test_a_cut_short_store_is_decoded_again(tmp_path, capsys):
    paths = [str(write_image(tmp_path / f"{i}.png", i, size=12)) for i in range(3)]
    cache = tmp_path / "cache"
    whole = load_images(paths, 8, str(cache)).clone()
    store = next(cache.glob("*.u8"))
    store.write_bytes(store.read_bytes()[:100])
    assert torch.equal(load_images(paths, 8, str(cache)), whole)
    assert "decoding again" in capsys.readouterr().out
    assert store.stat().st_size == 3 * 8 * 8 * 3


def test_load_images_of_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="dvc repro split"):
        load_images([str(tmp_path / "gone.png")], 8)


def test_image_dataset_items_are_float_with_per_image_transforms():
    images = torch.tensor([[[[0, 255]]] * 3, [[[255, 51]]] * 3], dtype=torch.uint8)  # (2, 3, 1, 2)
    identity = ImageDataset(images, torch.tensor([0, 1]), transforms=[lambda x: x] * 2)
    image, label = identity[1]
    assert image.dtype == torch.float32 and torch.allclose(image[0, 0], torch.tensor([1.0, 0.2]))
    assert label.dtype == torch.float32 and label.item() == 1.0
    flipped = ImageDataset(images, torch.tensor([0, 1]), transforms=[lambda x: x.flip(-1)] * 2)
    assert torch.allclose(flipped[1][0][0, 0], torch.tensor([0.2, 1.0]))
    assert len(flipped) == 2


def test_image_dataset_gathers_whole_uint8_batches_for_the_device():
    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).view(5, 3, 2, 2)
    dataset = ImageDataset(images, torch.tensor([0, 1, 0, 1, 1]))
    batch, labels = dataset.__getitems__([4, 0, 2])
    assert batch.dtype == torch.uint8 and torch.equal(batch, images[[4, 0, 2]])
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert labels.tolist() == [1.0, 0.0, 0.0]
