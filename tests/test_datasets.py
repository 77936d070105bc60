"""Datasets: the built-in shapes, image folders, .npz arrays, CIFAR-10 batches, flips and the open_dataset door."""

import hashlib
import os
import pickle
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_fast.data.datasets import (Cifar10Dataset, ImageFolderDataset, NpzDataset, ShapesDataset, describe,
                                     open_dataset)

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): datasets and transforms:
# no kernel.
pytestmark = pytest.mark.torch_references


def names(path) -> str:
    """A pytest.raises pattern matching a message that names ``path``."""
    return re.escape(str(path))


def pixels_of(dataset) -> torch.Tensor:
    return torch.stack([dataset[i] for i in range(len(dataset))])


# ---------------------------------------------------------------------------------------------------------------
# ShapesDataset

# sha256 of ShapesDataset(64, 32, seed=0).images: pins the generator so any change to a pixel on any machine shows.
SHAPES_SHA256 = "6c631be652f83bdb992b6063335c265f2b9780643943f59b5153f31a2cf8fdaa"


def test_shapes_are_deterministic_and_in_range():
    first, second = ShapesDataset(256, 32, seed=3), ShapesDataset(256, 32, seed=3)
    assert torch.equal(first.images, second.images)
    assert first.images.dtype == torch.uint8 and first.images.shape == (256, 3, 32, 32)
    assert (first.image_size, first.channels, len(first)) == (32, 3, 256)
    batch = pixels_of(first)
    assert batch.dtype == torch.float32 and batch.shape == (256, 3, 32, 32)
    assert batch.min() >= -1 and batch.max() <= 1
    assert torch.equal(batch, first.images.float() / 127.5 - 1)
    assert not torch.equal(first.images, ShapesDataset(256, 32, seed=4).images)


def test_shapes_pinned_checksum():
    digest = hashlib.sha256(ShapesDataset(64, 32, seed=0).images.numpy().tobytes()).hexdigest()
    assert digest == SHAPES_SHA256


def test_shapes_image_i_does_not_depend_on_the_count():
    assert torch.equal(ShapesDataset(10, 16, seed=1).images, ShapesDataset(100, 16, seed=1).images[:10])


def test_shapes_are_varied_and_contrasting():
    images = ShapesDataset(512, 32, seed=0).images.numpy().transpose(0, 2, 3, 1).reshape(512, -1, 3)
    assert len({image.tobytes() for image in images}) == 512
    assert (images.astype(np.float64).std(axis=(1, 2)) > 20).all()  # no flat images (uint8 units)
    coverage = []
    for image in images:
        colours, counts = np.unique(image, axis=0, return_counts=True)
        assert 2 <= len(colours) <= 3  # background + 1 or 2 shapes, solid colours, no blending
        background = colours[counts.argmax()].astype(np.float64)
        shape_colours = np.delete(colours, counts.argmax(), axis=0).astype(np.float64)
        assert (np.sqrt(((shape_colours - background) ** 2).sum(-1)) >= 170).all()
        coverage.append(1 - counts.max() / counts.sum())
    assert 0.1 < np.mean(coverage) < 0.6  # shapes are large, but the background shows


def test_shapes_held_out_differs_from_train():
    train = ShapesDataset(512, 32, seed=0)
    held_out = ShapesDataset.held_out(512, 32, seed=0)
    assert torch.equal(held_out.images, ShapesDataset(512, 32, seed=0, split="held_out").images)
    train_images = {image.numpy().tobytes() for image in train.images}
    assert not any(image.numpy().tobytes() in train_images for image in held_out.images)
    assert held_out.split == "held_out" and len(held_out) == 512


@pytest.mark.parametrize("image_size", [8, 17, 64])
def test_shapes_other_sizes(image_size):
    dataset = ShapesDataset(16, image_size)
    assert dataset[0].shape == (3, image_size, image_size)
    assert (dataset.images.float().std(dim=(1, 2, 3)) > 10).all()


def test_shapes_generation_is_fast():
    start = time.perf_counter()
    ShapesDataset(4096, 32)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("kwargs, error", [
    ({"num_images": 0}, ValueError), ({"image_size": 2}, ValueError), ({"seed": -1}, ValueError),
    ({"split": "test"}, ValueError), ({"num_images": 2.0}, TypeError), ({"image_size": True}, TypeError),
])
def test_shapes_bad_arguments(kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        ShapesDataset(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# ImageFolderDataset


def solid(colour, size=(6, 4), mode="RGB"):
    return Image.new(mode, size, colour)


@pytest.fixture
def image_folder(tmp_path):
    """Files in an order that a non-recursive, case-sensitive or unsorted search would get wrong."""
    root = tmp_path / "images"
    (root / "b" / "deep").mkdir(parents=True)
    solid((255, 0, 0)).save(root / "z.png")
    solid((0, 255, 0)).save(root / "a.PNG")
    solid((0, 0, 255)).save(root / "b" / "c.JPG", quality=100)
    solid((255, 255, 0)).save(root / "b" / "deep" / "0.jpeg", quality=100)
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_finds_sorted_recursive_case_insensitive(image_folder):
    dataset = ImageFolderDataset(image_folder, 4)
    assert [p.relative_to(image_folder).as_posix() for p in dataset.files] == \
           ["a.PNG", "b/c.JPG", "b/deep/0.jpeg", "z.png"]
    batch = pixels_of(dataset)
    assert batch.shape == (4, 3, 4, 4) and batch.dtype == torch.float32
    expected = torch.tensor([[-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, -1]], dtype=torch.float32)
    torch.testing.assert_close(batch.mean(dim=(2, 3)), expected, atol=0.03, rtol=0)  # JPEG is lossy
    assert (dataset.image_size, dataset.channels) == (4, 3)


def test_image_folder_resizes_shorter_side_and_centre_crops(tmp_path):
    image = np.zeros((10, 30, 3), dtype=np.uint8)
    image[:, :10] = (255, 0, 0)
    image[:, 10:20] = (0, 255, 0)
    image[:, 20:] = (0, 0, 255)
    Image.fromarray(image).save(tmp_path / "wide.png")
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 0, 2))).save(tmp_path / "tall.png")
    dataset = ImageFolderDataset(tmp_path, 10)  # shorter side is already 10: the crop alone keeps the middle
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 10, 10)
    assert torch.equal(dataset[0], green) and torch.equal(dataset[1], green)
    small = ImageFolderDataset(tmp_path, 5)
    assert small[1].shape == (3, 5, 5)
    torch.testing.assert_close(small[1][:, 1:4, 1:4], green[:, :3, :3], atol=0.05, rtol=0)


def test_image_folder_converts_greyscale_and_rgba(tmp_path):
    solid(255, mode="L").save(tmp_path / "a_grey.png")
    solid((0, 0, 255, 0), mode="RGBA").save(tmp_path / "b_rgba.png")
    solid((0, 255, 0), size=(3, 3), mode="P").save(tmp_path / "c_palette.png")
    batch = pixels_of(ImageFolderDataset(tmp_path, 3))
    assert batch.shape == (3, 3, 3, 3)
    assert torch.equal(batch[0], torch.ones(3, 3, 3))
    assert torch.equal(batch[1], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 3, 3))  # alpha dropped
    assert torch.equal(batch[2], torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 3, 3))


def test_image_folder_workers_match_single_process(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (9 + i, 12, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    dataset = ImageFolderDataset(tmp_path, 8)
    single = torch.cat(list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=0)))
    parallel = torch.cat(list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)))
    assert single.shape == (7, 3, 8, 8)
    assert torch.equal(single, parallel)
    assert len({image.numpy().tobytes() for image in single}) == 7


def _truncated(path, image):
    image.save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_image_folder_finds_unreadable_files_when_opened_and_names_them(tmp_path):
    solid((1, 2, 3)).save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    _truncated(tmp_path / "truncated.png", solid((1, 2, 3), size=(40, 40)))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _truncated(tmp_path / "truncated.jpg", Image.fromarray(noise))
    with pytest.raises(ValueError, match=names(tmp_path / "junk.png") + ".*skip_unreadable_images=True"):
        ImageFolderDataset(tmp_path, 4)
    (tmp_path / "junk.png").unlink()
    with pytest.raises(ValueError, match=names(tmp_path / "truncated.jpg")):  # a JPEG cut short, found at once
        ImageFolderDataset(tmp_path, 4)
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    dataset = ImageFolderDataset(tmp_path, 4, skip_unreadable=True)
    assert len(dataset) == 1 and dataset[0].shape == (3, 4, 4)
    assert [path for path, _ in dataset.skipped] == [str(tmp_path / name) for name in
                                                     ("junk.png", "truncated.jpg", "truncated.png")]
    assert all(why for _, why in dataset.skipped)
    assert describe(dataset).endswith("1 images of 3x4x4 (3 unreadable skipped)")
    assert len(open_dataset(str(tmp_path), 4, skip_unreadable=True)) == 1
    with pytest.raises(TypeError, match="skip_unreadable"):
        ImageFolderDataset(tmp_path, 4, skip_unreadable="yes")
    (tmp_path / "good.png").unlink()
    with pytest.raises(ValueError, match="none of its 3 images can be read"):
        ImageFolderDataset(tmp_path, 4, skip_unreadable=True)


def test_image_folder_file_that_breaks_after_opening_is_named_when_read(tmp_path):
    solid((1, 2, 3)).save(tmp_path / "a.png")
    dataset = ImageFolderDataset(tmp_path, 4)
    (tmp_path / "a.png").write_bytes(b"replaced by junk")
    with pytest.raises(ValueError, match=names(tmp_path / "a.png")):
        dataset[0]


def test_image_folder_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match=names(tmp_path / "missing")):
        ImageFolderDataset(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=names(tmp_path / "empty")):
        ImageFolderDataset(tmp_path / "empty", 8)
    solid((0, 0, 0)).save(tmp_path / "one.png")
    with pytest.raises(ValueError, match=names(tmp_path / "one.png")):
        ImageFolderDataset(tmp_path / "one.png", 8)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(tmp_path, 0)


# ---------------------------------------------------------------------------------------------------------------
# NpzDataset


def uint8_images(n=5, size=6, channels=3, seed=0):
    """[N, H, W, C] with the extremes 0 and 255 present, so the [-1, 1] mapping is checked at both ends."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    images[0, 0, 0, 0], images[0, 0, 1, 0] = 0, 255
    return images


def test_npz_nhwc_and_nchw_uint8(tmp_path):
    images = uint8_images()
    np.savez(tmp_path / "nhwc.npz", images=images)
    np.savez(tmp_path / "nchw.npz", images.transpose(0, 3, 1, 2))
    nhwc, nchw = NpzDataset(tmp_path / "nhwc.npz"), NpzDataset(tmp_path / "nchw.npz")
    expected = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32)) / 127.5 - 1
    assert torch.equal(pixels_of(nhwc), expected) and torch.equal(pixels_of(nchw), expected)
    assert nhwc[0][0, 0, 0] == -1 and nhwc[0][0, 0, 1] == 1
    assert (len(nhwc), nhwc.image_size, nhwc.channels) == (5, 6, 3)


def test_npz_key_selection(tmp_path):
    images = uint8_images()
    np.savez(tmp_path / "two.npz", train=images, other=images[:2] // 2)
    dataset = NpzDataset(tmp_path / "two.npz", key="other")
    assert len(dataset) == 2
    assert torch.equal(dataset[1], torch.from_numpy(images[1] // 2).permute(2, 0, 1).float() / 127.5 - 1)
    with pytest.raises(ValueError, match="key="):
        NpzDataset(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="'missing'"):
        NpzDataset(tmp_path / "two.npz", key="missing")


def test_npz_float_rule_and_channels(tmp_path):
    floats = np.linspace(-1, 1, 2 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    np.savez(tmp_path / "float.npz", floats)
    dataset = NpzDataset(tmp_path / "float.npz")
    assert dataset.channels == 1 and dataset[1].dtype == torch.float32
    assert torch.equal(dataset[1], torch.from_numpy(floats[1]).float())
    np.savez(tmp_path / "unit.npz", floats * 0.5 + 1.0)  # [0.5, 1.5]: not [-1, 1]
    with pytest.raises(ValueError, match=names(tmp_path / "unit.npz") + ".*\\[-1, 1\\]"):
        NpzDataset(tmp_path / "unit.npz")
    np.savez(tmp_path / "nan.npz", np.full((1, 4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=names(tmp_path / "nan.npz")):
        NpzDataset(tmp_path / "nan.npz")
    np.savez(tmp_path / "int.npz", uint8_images().astype(np.int64))
    with pytest.raises(ValueError, match="int64"):
        NpzDataset(tmp_path / "int.npz")
    np.savez(tmp_path / "rgba.npz", uint8_images(channels=4))
    assert NpzDataset(tmp_path / "rgba.npz").channels == 4


def test_npz_float_images_in_0_1_are_refused_unless_their_range_is_given(tmp_path):
    """Most float image arrays are [0, 1]: taken as [-1, 1] they would train washed-out images, silently."""
    unit = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    unit[0, 0, 0, 0], unit[0, 0, 1, 0] = 0.0, 1.0
    np.savez(tmp_path / "unit.npz", unit)
    with pytest.raises(ValueError, match=names(tmp_path / "unit.npz") + r".*lie in \[0, 1\].*--data-range 0,1.*"
                                         r"value_range=\(0, 1\)"):
        NpzDataset(tmp_path / "unit.npz")
    mapped = NpzDataset(tmp_path / "unit.npz", value_range=(0, 1))
    assert mapped.value_range == (0.0, 1.0) and mapped[0].dtype == torch.float32
    assert torch.allclose(pixels_of(mapped), torch.from_numpy(unit).permute(0, 3, 1, 2) * 2 - 1, atol=1e-6)
    assert mapped[0][0, 0, 0] == -1 and mapped[0][0, 0, 1] == 1
    as_stored = NpzDataset(tmp_path / "unit.npz", value_range=(-1, 1))  # [-1, 1] images that happen to be >= 0
    assert torch.equal(pixels_of(as_stored), torch.from_numpy(unit).permute(0, 3, 1, 2))
    wide = NpzDataset(tmp_path / "unit.npz", value_range=(-1.0, 3.0))  # any range maps linearly
    assert torch.allclose(pixels_of(wide), torch.from_numpy(unit).permute(0, 3, 1, 2) / 2 - 0.5, atol=1e-6)
    with pytest.raises(ValueError, match=r"outside the value range \[0, 0.5\]"):
        NpzDataset(tmp_path / "unit.npz", value_range=(0, 0.5))
    np.savez(tmp_path / "pixels.npz", uint8_images())
    with pytest.raises(ValueError, match=r"uint8 pixels, which are \[0, 255\]"):
        NpzDataset(tmp_path / "pixels.npz", value_range=(0, 1))
    assert torch.equal(pixels_of(NpzDataset(tmp_path / "pixels.npz", value_range=(0, 255))),
                       pixels_of(NpzDataset(tmp_path / "pixels.npz")))
    with pytest.raises(ValueError, match="value_range must be finite numbers"):
        NpzDataset(tmp_path / "unit.npz", value_range=(1, 0))
    with pytest.raises(TypeError, match="value_range must be a pair"):
        NpzDataset(tmp_path / "unit.npz", value_range="0,1")
    with pytest.raises(ValueError, match=r"value_range=\(0, 1\) \(--data-range\) applies to a .npz file"):
        open_dataset("shapes", 8, value_range=(0, 1))
    assert len(open_dataset(str(tmp_path / "unit.npz"), 4, value_range=(0, 1))) == 3


def test_npz_resizes_to_image_size(tmp_path):
    images = np.full((3, 16, 16, 3), 77, dtype=np.uint8)
    images[1] = uint8_images(1, 16)[0]
    np.savez(tmp_path / "big.npz", images)
    dataset = NpzDataset(tmp_path / "big.npz", image_size=8)
    assert dataset.image_size == 8 and dataset.images.dtype == torch.uint8
    assert dataset.images.shape == (3, 3, 8, 8)
    assert (dataset.images[0] == 77).all()  # a flat image stays flat
    assert dataset[1].min() >= -1 and dataset[1].max() <= 1
    floats = np.full((1, 3, 4, 4), -1.0, dtype=np.float32)
    floats[..., ::2] = 1.0
    np.savez(tmp_path / "float.npz", floats)
    up = NpzDataset(tmp_path / "float.npz", image_size=9)
    assert up[0].shape == (3, 9, 9) and up[0].min() >= -1 and up[0].max() <= 1


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 6, 6), dtype=np.uint8), "4-D"),
    (np.zeros((2, 4, 6, 6, 3), dtype=np.uint8), "4-D"),
    (np.zeros((0, 6, 6, 3), dtype=np.uint8), "no images"),
    (np.zeros((2, 6, 5, 3), dtype=np.uint8), "square"),
    (np.zeros((2, 6, 6, 2), dtype=np.uint8), "square"),
])
def test_npz_bad_arrays(tmp_path, array, message):
    np.savez(tmp_path / "bad.npz", array)
    with pytest.raises(ValueError, match=names(tmp_path / "bad.npz") + ".*" + message):
        NpzDataset(tmp_path / "bad.npz")


def test_npz_bad_files(tmp_path):
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match=names(tmp_path / "empty.npz") + ".*empty"):
        NpzDataset(tmp_path / "empty.npz")
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = {"a": 1}, [2]
    np.savez(tmp_path / "objects.npz", objects)  # np.savez pickles object arrays; loading them must be refused
    with pytest.raises(ValueError, match=names(tmp_path / "objects.npz")):
        NpzDataset(tmp_path / "objects.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=names(tmp_path / "text.npz")):
        NpzDataset(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", uint8_images())
    with pytest.raises(ValueError, match=names(tmp_path / "single.npy")):
        NpzDataset(tmp_path / "single.npy")
    with pytest.raises(FileNotFoundError, match=names(tmp_path / "missing.npz")):
        NpzDataset(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------------------------------------------
# Cifar10Dataset


def cifar_batch(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar(parent, protocol=2, sizes=(3, 2, 2, 2, 2), test_size=4):
    """A small fake cifar-10-batches-py folder with the real files' dict layout; returns the batches' data."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = {}
    files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes)] + [("test_batch", test_size)]
    for seed, (name, n) in enumerate(files):
        data[name] = cifar_batch(n, seed)
        batch = {b"batch_label": name.encode(), b"labels": list(range(n)), b"data": data[name],
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return data


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_train_and_test(tmp_path, protocol):
    data = write_cifar(tmp_path, protocol)
    train = Cifar10Dataset(tmp_path)
    assert len(train) == 11 and (train.image_size, train.channels) == (32, 3)
    first = data["data_batch_1"][0]
    image = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:  # rows are 1024 R, then G, then B, each row-major
        assert train.images[0, c, y, x] == first[c * 1024 + y * 32 + x]
    assert torch.equal(image, torch.from_numpy(first.reshape(3, 32, 32)).float() / 127.5 - 1)
    assert torch.equal(train[3], torch.from_numpy(data["data_batch_2"][0].reshape(3, 32, 32)).float() / 127.5 - 1)
    test = Cifar10Dataset(tmp_path / "cifar-10-batches-py", split="test")  # the folder itself works too
    assert len(test) == 4
    assert torch.equal(test.images.reshape(4, 3072), torch.from_numpy(data["test_batch"]))


def test_cifar_resizes_and_checks_arguments(tmp_path):
    write_cifar(tmp_path)
    assert Cifar10Dataset(tmp_path, "test", image_size=16)[0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="split"):
        Cifar10Dataset(tmp_path, split="validation")


def test_cifar_missing_and_malformed_batches(tmp_path):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=names(folder / "data_batch_3")):
        Cifar10Dataset(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match=names(folder / "test_batch") + ".*b'data'"):
        Cifar10Dataset(tmp_path, "test")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}, protocol=2))
    with pytest.raises(ValueError, match=names(folder / "test_batch") + ".*3072"):
        Cifar10Dataset(tmp_path, "test")
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match=names(folder / "test_batch")):
        Cifar10Dataset(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=names(tmp_path / "nowhere")):
        Cifar10Dataset(tmp_path / "nowhere")


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


class DecodesRot13:  # _codecs.encode is allowed only as the latin-1 bytes builder of protocol 2
    def __reduce__(self):
        import codecs
        return codecs.encode, ("abc", "rot13")


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", ["system", "eval", "rot13"])
def test_cifar_refuses_malicious_pickles(tmp_path, protocol, payload):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {"system": RunsACommand(marker), "eval": CallsEval(), "rot13": DecodesRot13()}[payload]
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": cifar_batch(2, 0), b"labels": evil}, protocol=protocol))
    with pytest.raises(ValueError, match=names(path)):
        Cifar10Dataset(tmp_path, "test")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# open_dataset and describe


def test_open_dataset_picks_the_kind(tmp_path):
    shapes = open_dataset("shapes", image_size=16, num_images=8, seed=2)
    assert isinstance(shapes, ShapesDataset) and shapes.image_size == 16 and len(shapes) == 8
    assert torch.equal(shapes.images, ShapesDataset(8, 16, seed=2).images)
    assert isinstance(open_dataset(None, num_images=4), ShapesDataset)

    with open(tmp_path / "arrays.NPZ", "wb") as handle:  # np.savez would append .npz to a path
        np.savez(handle, uint8_images(size=12))
    arrays = open_dataset(tmp_path / "arrays.NPZ", image_size=6)
    assert isinstance(arrays, NpzDataset) and arrays[0].shape == (3, 6, 6)

    write_cifar(tmp_path / "cifar_parent")
    for root in (tmp_path / "cifar_parent", tmp_path / "cifar_parent" / "cifar-10-batches-py"):
        cifar = open_dataset(str(root), split="test")
        assert isinstance(cifar, Cifar10Dataset) and len(cifar) == 4

    (tmp_path / "pictures" / "sub").mkdir(parents=True)
    solid((9, 9, 9)).save(tmp_path / "pictures" / "sub" / "x.jpg")
    folder = open_dataset(tmp_path / "pictures", image_size=5)
    assert isinstance(folder, ImageFolderDataset) and folder[0].shape == (3, 5, 5)


def test_open_dataset_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=names(tmp_path / "missing")):
        open_dataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=names(tmp_path / "missing.npz")):
        open_dataset(str(tmp_path / "missing.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=names(tmp_path / "empty")):
        open_dataset(tmp_path / "empty")
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=names(tmp_path / "data.txt")):
        open_dataset(tmp_path / "data.txt")
    (tmp_path / "fake.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=names(tmp_path / "fake.npz")):
        open_dataset(tmp_path / "fake.npz")
    with pytest.raises(TypeError, match="source"):
        open_dataset(42)


def test_describe(tmp_path):
    assert describe(ShapesDataset(8, 16, seed=1)) == "ShapesDataset (generated, seed 1, train): 8 images of 3x16x16"
    np.savez(tmp_path / "a.npz", uint8_images(n=3, channels=1))
    line = describe(NpzDataset(tmp_path / "a.npz"))
    assert line.startswith("NpzDataset (") and str(tmp_path / "a.npz") in line and line.endswith("3 images of 1x6x6")
