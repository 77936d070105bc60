"""Training data: the built-in shapes dataset, image folders, ``.npz`` arrays and local CIFAR-10 batches.

Every dataset yields one float32 tensor [C, H, W] in [-1, 1] per index and carries ``image_size`` and ``channels``
so the trainer can size the model. Those with classes also carry ``labels`` (int64 [N], in [0, num_classes)) and
``class_names``, which class-conditional training reads (``dataset_labels``): CIFAR-10 its ten classes, an image
folder its sub-folders, the shapes dataset the kind of the shape drawn on top. Random horizontal flips are not done
here: the trainer flips each global batch with flips drawn from (seed, step) (``training/batches.py``), so a run is
reproducible, resumes exactly, and is the same under torchrun, whatever the number of loader workers.

Rules, chosen once for all kinds:
- uint8 pixels map to ``x / 127.5 - 1``; float arrays (``.npz`` only) must lie in [-1, 1], or in the
  ``value_range`` given, which maps linearly onto [-1, 1]. A float array whose values all lie in [0, 1] is refused
  without a ``value_range``: it is almost surely a [0, 1] image array (what image libraries and ``ToTensor`` give),
  and trained on as [-1, 1] it would teach washed-out images, silently.
- A dataset whose native size differs from ``image_size`` is resized: image folders with Pillow (shorter side
  to ``image_size``, bicubic, then a centre crop), ``.npz`` arrays and CIFAR-10 once at load time with
  ``torch.nn.functional.interpolate`` (bicubic, antialiased). Arrays must hold square images.
- Nothing a user hands over is unpickled with plain ``pickle``: ``.npz`` files load with ``allow_pickle=False``
  and CIFAR-10 batches with an unpickler that builds numpy arrays and nothing else.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import zipfile
import zlib
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..checks import check_choice, check_value_range

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SHAPES_SPLITS = {"train": 0, "held_out": 1}  # the value keys the random stream, so the splits never share images


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def describe(dataset: torch.utils.data.Dataset) -> str:
    """One line for logs: kind, where from, how many images and their size."""
    kind = type(dataset).__name__
    source = getattr(dataset, "source", None)
    size = f"{getattr(dataset, 'channels', '?')}x{getattr(dataset, 'image_size', '?')}x" \
           f"{getattr(dataset, 'image_size', '?')}"
    skipped = getattr(dataset, "skipped", None)
    note = f" ({len(skipped)} unreadable skipped)" if skipped else ""
    return f"{kind}{f' ({source})' if source else ''}: {len(dataset)} images of {size}{note}"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] (0 → -1 and 255 → 1 exactly); float tensors pass through as float32."""
    if pixels.dtype == torch.uint8:
        return pixels.to(torch.float32).div_(127.5).sub_(1.0)
    return pixels.to(torch.float32)


def _resize_square(images: torch.Tensor, image_size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize [N, C, S, S] images to image_size², keeping the dtype (uint8 stays uint8 so memory stays small)."""
    if images.shape[-1] == image_size:
        return images
    out = torch.empty((*images.shape[:2], image_size, image_size), dtype=images.dtype)
    low, high = (0.0, 255.0) if images.dtype == torch.uint8 else (-1.0, 1.0)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].to(torch.float32)
        part = F.interpolate(part, size=(image_size, image_size), mode="bicubic", antialias=True,
                             align_corners=False).clamp_(low, high)  # bicubic overshoots; keep the value range
        out[start:start + chunk] = part.round_() if images.dtype == torch.uint8 else part
    return out


def _existing_path(path: PathLike, name: str) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__}")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name} {path}: no such file or folder")
    return path


class InMemoryImages(torch.utils.data.Dataset):
    """Images held in one [N, C, S, S] tensor (uint8 pixels, or float32 already in [-1, 1]), served as [-1, 1].

    Kept as uint8 where possible: a quarter of the memory of float32, and DataLoader workers share it.
    """

    images: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return _to_unit_range(self.images[index])


# ---------------------------------------------------------------------------------------------------------------
# the built-in dataset: coloured shapes on plain backgrounds

# Eight saturated shape colours; the backgrounds are these plus near-black and near-white. A shape takes only a
# colour at least _MIN_CONTRAST away (RGB distance) from its background, so every shape stands out.
_SHAPE_COLOURS = np.array([(220, 40, 40), (245, 140, 20), (240, 220, 40), (40, 180, 70),
                           (40, 200, 220), (40, 80, 220), (140, 60, 200), (230, 60, 170)], dtype=np.uint8)
_BACKGROUNDS = np.concatenate([_SHAPE_COLOURS, np.array([(20, 20, 20), (240, 240, 240)], dtype=np.uint8)])
_MIN_CONTRAST = 170


def _contrasting_colours() -> tuple[np.ndarray, np.ndarray]:
    """For each background: the shape colours far enough from it (padded table) and how many there are."""
    squared_distance = ((_BACKGROUNDS[:, None].astype(np.int64) - _SHAPE_COLOURS[None]) ** 2).sum(-1)  # exact
    allowed = [np.flatnonzero(row >= _MIN_CONTRAST ** 2) for row in squared_distance]
    table = np.zeros((len(allowed), max(map(len, allowed))), dtype=np.int64)
    for row, colours in zip(table, allowed):
        row[:len(colours)] = colours
    return table, np.array([len(colours) for colours in allowed])


_ALLOWED_COLOURS, _ALLOWED_COUNTS = _contrasting_colours()
_SHAPE_KINDS = 3  # filled circle, square, upward triangle
SHAPE_CLASS_NAMES = ("circle", "square", "triangle")
CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_DRAWS_PER_IMAGE = 12  # background, has-second-shape, and (kind, colour, size, x, y) per shape


class ShapesDataset(InMemoryImages):
    """1–2 filled circles, squares or triangles in solid colours on a plain background, generated on the spot.

    The default dataset, so training runs on a fresh machine with no downloads. Simple enough that a tiny DDPM
    trained for minutes on a CPU draws recognisable shapes: 8 saturated colours, 3 shape kinds, each shape 30–70%
    of the image wide. Bit-identical on every machine for a given seed: the only randomness is
    ``np.random.default_rng`` uniform doubles, and the drawing uses exact float64 arithmetic (+, -, *, abs and
    comparisons; no transcendental functions, no reductions), so neither the CPU nor threading can change a pixel.
    Image i does not depend on ``num_images``. ``split="held_out"`` draws from another stream of the same seed.

    Its class (``labels``, for class-conditional training) is the kind of the shape drawn last, on top and so never
    covered: 0 circle, 1 square, 2 triangle (``class_names``). An image with two shapes may hold another kind
    beneath it.
    """

    def __init__(self, num_images: int = 4096, image_size: int = 32, seed: int = 0, split: str = "train"):
        self.num_images = _check_int("num_images", num_images, 1)
        self.image_size = _check_int("image_size", image_size, 4)
        self.seed = _check_int("seed", seed, 0)
        stream = check_choice("split", split, SHAPES_SPLITS)
        self.split, self.channels = split, 3
        self.source = f"generated, seed {self.seed}, {split}"
        rng = np.random.default_rng([self.seed, stream])
        draws = rng.random((self.num_images, _DRAWS_PER_IMAGE))
        self.images = torch.from_numpy(_draw_shapes(draws, self.image_size))
        self.labels = torch.from_numpy(_top_shape_kinds(draws))
        self.class_names = SHAPE_CLASS_NAMES

    @classmethod
    def held_out(cls, num_images: int = 1024, image_size: int = 32, seed: int = 0) -> "ShapesDataset":
        """Images from the held-out stream: same distribution as training, never the same images."""
        return cls(num_images, image_size, seed, split="held_out")


def _shape_kind(kind_draw: np.ndarray) -> np.ndarray:
    return np.minimum((kind_draw * _SHAPE_KINDS).astype(np.int64), _SHAPE_KINDS - 1)


def _top_shape_kinds(draws: np.ndarray) -> np.ndarray:
    """int64 [N]: the kind of the shape _draw_shapes draws last (the second when there is one)."""
    return np.where(draws[:, 1] < 0.5, _shape_kind(draws[:, 7]), _shape_kind(draws[:, 2]))


def _draw_shapes(draws: np.ndarray, size: int, chunk: int = 512) -> np.ndarray:
    """Render images from uniform draws [N, _DRAWS_PER_IMAGE] into uint8 [N, 3, size, size]."""
    count = draws.shape[0]
    background = np.minimum((draws[:, 0] * len(_BACKGROUNDS)).astype(np.int64), len(_BACKGROUNDS) - 1)
    has_second = draws[:, 1] < 0.5
    allowed = _ALLOWED_COUNTS[background]
    # First colour: any contrasting one. Second: any contrasting one except the first, so overlaps stay visible.
    first = np.minimum((draws[:, 3] * allowed).astype(np.int64), allowed - 1)
    second = np.minimum((draws[:, 8] * (allowed - 1)).astype(np.int64), allowed - 2)
    second += second >= first
    colours = [_SHAPE_COLOURS[_ALLOWED_COLOURS[background, first]],
               _SHAPE_COLOURS[_ALLOWED_COLOURS[background, second]]]

    centres = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for start in range(0, count, chunk):
        part = slice(start, min(start + chunk, count))
        image = np.broadcast_to(_BACKGROUNDS[background[part], None, None, :], images[part].shape).copy()
        for shape, offset in enumerate((2, 7)):
            d = draws[part, offset:offset + 5]
            kind = _shape_kind(d[:, 0])
            extent = (0.3 + 0.4 * d[:, 2]) * size  # bounding-box side, 30–70% of the image
            half = (extent * 0.5)[:, None, None]
            dx = centres[None, None, :] - (extent * 0.5 + d[:, 3] * (size - extent))[:, None, None]
            dy = centres[None, :, None] - (extent * 0.5 + d[:, 4] * (size - extent))[:, None, None]
            circle = dx * dx + dy * dy <= half * half
            square = (np.abs(dx) <= half) & (np.abs(dy) <= half)
            triangle = (dy <= half) & (np.abs(dx) <= (dy + half) * 0.5)  # apex up, base as wide as it is tall
            kind = kind[:, None, None]
            mask = np.where(kind == 0, circle, np.where(kind == 1, square, triangle))
            if shape == 1:
                mask &= has_second[part, None, None]
            image = np.where(mask[..., None], colours[shape][part, None, None, :], image)
        images[part] = image
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------
# image folders


class ImageFolderDataset(torch.utils.data.Dataset):
    """Every PNG/JPEG under ``root`` (recursive, case-insensitive suffix, sorted by relative path), as RGB.

    Every file is decoded once here (JPEGs at reduced scale, so the check is quick), so that an unreadable image is
    found before training starts rather than mid-run: a ValueError naming it, or with ``skip_unreadable=True`` the
    file is left out and listed in ``skipped`` ([(path, why)]). Images are then read lazily in ``__getitem__`` (so
    DataLoader workers share the decoding), turned upright by their EXIF orientation, converted to RGB (greyscale
    is replicated, alpha is dropped), resized so the shorter side is ``image_size`` (bicubic) and centre-cropped to
    a square.

    Classes (``labels``, ``class_names``) are the sub-folders of ``root``, sorted by name, as torchvision's
    ImageFolder has them: an image's class is the first folder of its path below ``root``. A folder with images
    directly in ``root`` has no classes (``labels`` is None).
    """

    def __init__(self, root: PathLike, image_size: int, skip_unreadable: bool = False):
        self.root = _existing_path(root, "root")
        if not self.root.is_dir():
            raise ValueError(f"root {self.root}: not a folder")
        self.image_size = _check_int("image_size", image_size, 1)
        if not isinstance(skip_unreadable, bool):
            raise TypeError(f"skip_unreadable must be True or False, got {skip_unreadable!r}")
        self.channels = 3
        self.source = str(self.root)
        found = sorted((path for path in self.root.rglob("*")
                        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()),
                       key=lambda path: path.relative_to(self.root).as_posix())
        if not found:
            raise ValueError(f"root {self.root}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
        self.files: list[pathlib.Path] = []
        self.skipped: list[tuple[str, str]] = []
        for path in found:
            problem = _unreadable_because(path, image_size)
            if problem is None:
                self.files.append(path)
            elif skip_unreadable:
                self.skipped.append((str(path), problem))
            else:
                raise ValueError(f"{path}: cannot read this image ({problem}); fix or remove it, or skip unreadable "
                                 "images (--skip-unreadable; TrainingConfig(skip_unreadable_images=True); "
                                 "ImageFolderDataset(..., skip_unreadable=True))")
        if not self.files:
            raise ValueError(f"root {self.root}: none of its {len(found)} images can be read (first: "
                             f"{self.skipped[0][0]}: {self.skipped[0][1]})")
        folders = [path.relative_to(self.root).parts[:-1] for path in self.files]
        self.class_names = tuple(sorted({parts[0] for parts in folders if parts}))
        self.labels = None
        self.unlabelled_because = None
        loose = [str(path) for path, parts in zip(self.files, folders) if not parts]
        if loose:
            self.unlabelled_because = (f"{len(loose)} image(s) lie directly in {self.root} (e.g. {loose[0]}), in no "
                                       "class sub-folder")
        else:
            index = {name: i for i, name in enumerate(self.class_names)}
            self.labels = torch.tensor([index[parts[0]] for parts in folders], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image = ImageOps.fit(image, (self.image_size, self.image_size), method=Image.Resampling.BICUBIC)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: cannot read this image ({error})") from None
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return _to_unit_range(pixels)


def _unreadable_because(path: pathlib.Path, image_size: int) -> Optional[str]:
    """None when the image decodes, else why not. JPEGs decode at the smallest scale still >= image_size (draft)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


# ---------------------------------------------------------------------------------------------------------------
# .npz arrays


class NpzDataset(InMemoryImages):
    """Square images stored in one array of an ``.npz`` file: [N, H, W, C] or [N, C, H, W] with C in 1, 3, 4.

    key: the array to read; may be left out when the file holds one array (a file of several names them in the
    error). uint8 pixels map to [-1, 1]. A float array must lie in [-1, 1]; one outside it (a [0, 255] array, say)
    is refused rather than rescaled by a guess, and so is one whose values all lie in [0, 1] (most float image
    arrays are [0, 1]; taken as [-1, 1] they would train washed-out images).
    value_range: (low, high), the range a float array's values lie in, mapped linearly onto [-1, 1]: (0, 1) for
    [0, 1] images, (-1, 1) to take an array that happens to lie in [0, 1] as it is. Values outside it are refused.
    For uint8 pixels only (0, 255) (what they are) is accepted.
    The layout is read from where the channel axis is (channels-last wins if both fit, e.g. [N, 3, 3, 3]). Channels
    are kept as stored. With ``image_size`` the images are resized once, at load time; by default they keep their
    stored size. Errors: ValueError naming the file (and the array) for every refusal, TypeError for a key or
    value_range of the wrong type, FileNotFoundError for a missing file.
    """

    def __init__(self, path: PathLike, image_size: Optional[int] = None, key: Optional[str] = None,
                 value_range: Optional[tuple[float, float]] = None):
        self.path = _existing_path(path, "path")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be the name of an array (a str) or None, got {type(key).__name__}")
        self.value_range = check_value_range(value_range)
        self.source = str(self.path) + (f"[{key}]" if key is not None else "")
        array = _load_npz_array(self.path, key, self.value_range)
        images = torch.from_numpy(_channels_first(array, self.path))
        self.channels = images.shape[1]
        self.image_size = images.shape[-1] if image_size is None else _check_int("image_size", image_size, 1)
        self.images = _resize_square(images, self.image_size)


def _load_npz_array(path: pathlib.Path, key: Optional[str],
                    value_range: Optional[tuple[float, float]] = None) -> np.ndarray:
    """The chosen array of an .npz file, read without unpickling anything: uint8 as stored, or float32 in [-1, 1]
    (a float array mapped from value_range); every failure names the file."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an .npz archive")
    with archive:
        names = list(archive.files)
        if key is None:
            if len(names) != 1:
                raise ValueError(f"{path}: holds {len(names)} arrays ({', '.join(names)}); choose the images with "
                                 "--key NAME (NpzDataset(..., key=NAME); TrainingConfig(data_key=NAME))"
                                 if names else f"{path}: empty .npz file (no arrays)")
            key = names[0]
        elif key not in names:
            raise ValueError(f"{path}: no array named {key!r} (arrays: {', '.join(names)})")
        try:
            array = archive[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # object arrays need pickle
            raise ValueError(f"{path}: cannot read array {key!r} ({error})") from None

    if array.dtype == np.uint8:
        if value_range is not None and value_range != (0.0, 255.0):
            raise ValueError(f"{path}: array {key!r} holds uint8 pixels, which are [0, 255]; value_range "
                             f"{value_range} (--data-range) applies to float arrays")
    elif array.dtype.kind == "f":
        array = _float_images_to_unit_range(array, path, key, value_range)
    else:
        raise ValueError(f"{path}: array {key!r} has dtype {array.dtype}; expected uint8 or float in [-1, 1]")
    if array.ndim != 4:
        raise ValueError(f"{path}: array {key!r} has shape {array.shape}; expected 4-D [N, H, W, C] or [N, C, H, W]")
    if array.shape[0] == 0:
        raise ValueError(f"{path}: array {key!r} holds no images (shape {array.shape})")
    return array


def _float_images_to_unit_range(array: np.ndarray, path: pathlib.Path, key: str,
                                value_range: Optional[tuple[float, float]]) -> np.ndarray:
    """float32 in [-1, 1] from a float array in value_range (None: [-1, 1] as stored, but not all within [0, 1])."""
    if not array.size:
        return array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: array {key!r} holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if value_range is None:
        if not (-1 <= low and high <= 1):
            raise ValueError(f"{path}: float images must lie in [-1, 1], got values in [{low}, {high}] (store "
                             "uint8 pixels, or give the range they lie in: --data-range LOW,HIGH; "
                             "NpzDataset(..., value_range=(LOW, HIGH)))")
        if low >= 0:
            raise ValueError(
                f"{path}: the float images lie in [0, 1] (values {low:.4g} to {high:.4g}), not [-1, 1]: trained on "
                "as they are, they would teach washed-out images. For [0, 1] images (image libraries, ToTensor) "
                "pass --data-range 0,1 (NpzDataset(..., value_range=(0, 1)); TrainingConfig(data_range=(0, 1))), "
                "which maps them to [-1, 1]; for [-1, 1] images that happen to lie in [0, 1], --data-range=-1,1")
        return array.astype(np.float32)
    range_low, range_high = value_range
    if low < range_low or high > range_high:
        raise ValueError(f"{path}: array {key!r} has values in [{low}, {high}], outside the value range "
                         f"[{range_low:g}, {range_high:g}] given (--data-range)")
    if high - low < (range_high - range_low) / 8:  # e.g. [0, 1] images given as 0,255: every image near -1
        raise ValueError(f"{path}: array {key!r} spans only [{low:.4g}, {high:.4g}], under an eighth of the value "
                         f"range [{range_low:g}, {range_high:g}] given (--data-range): mapped, every image would be "
                         "nearly one flat colour; give the range the values were stored in (0,1 for [0, 1] floats)")
    mapped = (array.astype(np.float64) - range_low) * (2.0 / (range_high - range_low)) - 1.0
    return np.clip(mapped, -1.0, 1.0).astype(np.float32)


def _channels_first(array: np.ndarray, path: pathlib.Path) -> np.ndarray:
    n, a, b, c = array.shape
    if c in (1, 3, 4) and a == b:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    if a in (1, 3, 4) and b == c:
        return np.ascontiguousarray(array)
    raise ValueError(f"{path}: shape {array.shape} is neither [N, S, S, C] nor [N, C, S, S] "
                     f"with C in 1, 3, 4 and square S×S images")


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches


class Cifar10Dataset(InMemoryImages):
    """The CIFAR-10 "python version" batches from a local folder (``cifar-10-batches-py`` or its parent).

    ``split="train"`` reads data_batch_1..5 (all five must be there), ``split="test"`` reads test_batch. The
    batches are pickles, read by :class:`_ArrayUnpickler`, which builds numpy arrays and nothing else. Native size
    is 32; another ``image_size`` resizes once at load time.
    """

    def __init__(self, root: PathLike, split: str = "train", image_size: int = 32):
        root = _existing_path(root, "root")
        folder = root / CIFAR10_FOLDER if (root / CIFAR10_FOLDER).is_dir() else root
        if not folder.is_dir():
            raise ValueError(f"root {root}: not a folder")
        check_choice("split", split, CIFAR10_FILES)
        self.folder, self.split, self.channels = folder, split, 3
        self.image_size = _check_int("image_size", image_size, 1)
        self.source = f"{folder}, {split}"
        batches = [_read_cifar_batch(folder / name) for name in CIFAR10_FILES[split]]
        self.images = _resize_square(torch.cat([torch.from_numpy(images) for images, _ in batches]), self.image_size)
        self.labels = torch.cat([torch.from_numpy(labels) for _, labels in batches])
        self.class_names = CIFAR10_CLASS_NAMES


def _read_cifar_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 3, 32, 32], int64 [N] labels) from one CIFAR-10 batch file: a dict whose b"data" is uint8
    [N, 3072] (RGB planes) and b"labels" N class indices in 0..9."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CIFAR-10 batch file")
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, path).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError, KeyError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({type(error).__name__}: {error})") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or data.shape[0] == 0:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: expected a dict with b'data' uint8 [N, 3072], N > 0; got {found}")
    labels = batch.get(b"labels")
    try:
        labels = np.asarray(labels, dtype=np.int64) if isinstance(labels, (list, np.ndarray)) else None
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() >= 10:
        raise ValueError(f"{path}: expected b'labels', {data.shape[0]} class indices in 0..9, beside b'data'")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


try:  # numpy >= 2 pickles arrays under numpy._core, older numpy (and the CIFAR files) under numpy.core
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct


def _latin1_encode(text: str, encoding: str) -> bytes:
    """What Python 3 protocol-2 pickles call to rebuild bytes; only the latin-1 form it writes is accepted."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only for latin1 strings, got {encoding!r}")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays (and dicts, lists, strings) and refuses every other global.

    Plain ``pickle.load`` runs whatever callable a file names (``os.system``...); here ``find_class`` is the only
    way a pickle reaches a callable, and it hands out just numpy's array reconstruction and, for pickles written
    by Python 3 with protocol 2, a latin-1-only stand-in for ``_codecs.encode`` (how that protocol stores bytes).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def __init__(self, handle, path: pathlib.Path):
        super().__init__(handle, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise ValueError(f"{self.path}: refused to unpickle {module}.{name}; CIFAR-10 batches hold only "
                             f"numpy arrays, lists and bytes")
        return allowed


# ---------------------------------------------------------------------------------------------------------------
# classes


def dataset_labels(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(labels int64 [N] in [0, K), class_names of length K) of a dataset with classes, for class-conditional
    training. ValueError saying why for one without: a .npz array, an image folder with loose images, any dataset
    lacking ``labels`` / ``class_names`` or holding labels outside [0, K)."""
    labels = getattr(dataset, "labels", None)
    names = getattr(dataset, "class_names", None)
    if labels is None or names is None:
        why = getattr(dataset, "unlabelled_because", None) or f"{type(dataset).__name__} has no class labels"
        raise ValueError(f"class-conditional training needs a dataset with classes (the shapes dataset, CIFAR-10, "
                         f"or an image folder with one sub-folder per class): {why}")
    labels = torch.as_tensor(labels)
    if labels.dtype != torch.int64 or labels.shape != (len(dataset),):
        raise ValueError(f"dataset labels must be int64 [{len(dataset)}], got {labels.dtype} {tuple(labels.shape)}")
    if len(names) < 1 or (labels.numel() and (labels.min() < 0 or labels.max() >= len(names))):
        raise ValueError(f"dataset labels must lie in [0, {len(names)}) (one per class name)")
    return labels, tuple(str(name) for name in names)


class LabelledImages(torch.utils.data.Dataset):
    """(image, label) pairs of a dataset and its labels; a DataLoader collates them into (images, labels [B])."""

    def __init__(self, dataset: torch.utils.data.Dataset, labels: torch.Tensor):
        self.dataset, self.labels = dataset, labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[index], self.labels[index]


# ---------------------------------------------------------------------------------------------------------------
# one front door


def open_dataset(source: Union[PathLike, None], image_size: int = 32, *, skip_unreadable: bool = False,
                 key: Optional[str] = None, value_range: Optional[tuple[float, float]] = None,
                 **options) -> torch.utils.data.Dataset:
    """The dataset ``source`` names, at ``image_size``; ``options`` go to its class. ``skip_unreadable`` applies to
    image folders (the other kinds are one file, read whole or refused); ``key`` and ``value_range`` to a ``.npz``
    file (see NpzDataset), and a ValueError says so when the source is of another kind.

    ``None`` or ``"shapes"`` → :class:`ShapesDataset` (num_images, seed, split); a ``.npz`` file →
    :class:`NpzDataset` (key); a folder holding data_batch_1 or test_batch, directly or in cifar-10-batches-py/ →
    :class:`Cifar10Dataset` (split); any other folder → :class:`ImageFolderDataset`. The word ``"shapes"`` wins
    over a folder of that name (write ``./shapes`` for the folder).
    """
    is_npz = isinstance(source, (str, os.PathLike)) and pathlib.Path(source).suffix.lower() == ".npz"
    for name, value, flag in (("key", key, "--key"), ("value_range", value_range, "--data-range")):
        if value is not None and not is_npz:
            raise ValueError(f"{name}={value!r} ({flag}) applies to a .npz file; the data {source or 'shapes'} is "
                             "not one")
    if source is None or (isinstance(source, str) and source == "shapes"):
        return ShapesDataset(image_size=image_size, **options)
    path = _existing_path(source, "source")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return NpzDataset(path, image_size=image_size, key=key, value_range=value_range, **options)
        raise ValueError(f"source {path}: not a dataset; expected 'shapes', a .npz file or a folder of images "
                         f"or CIFAR-10 batches")
    if any((folder / name).is_file() for folder in (path, path / CIFAR10_FOLDER)
           for name in ("data_batch_1", "test_batch")):
        return Cifar10Dataset(path, image_size=image_size, **options)
    return ImageFolderDataset(path, image_size, skip_unreadable=skip_unreadable, **options)
