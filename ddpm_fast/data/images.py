"""Image grids: float32 [N, C, H, W] in [-1, 1] → one PNG (samples, training data), written atomically."""
from __future__ import annotations

import io
import math
import os
from typing import Union

import torch

from .. import files

MIN_GRID_PIXELS = 512  # a grid of small images (16×16 samples: 128 px) is enlarged to at least this, pixel for pixel


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 [N, C, H, W], on the images' device (FastSampler's output_type="uint8" is this, NHWC)."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def png_grid(images: torch.Tensor, min_pixels: int = MIN_GRID_PIXELS) -> bytes:
    """The images as one PNG: ceil(sqrt(N)) columns, row by row, black where the last row runs short. A grid whose
    longer side is under `min_pixels` is enlarged by the smallest whole factor that reaches it, each pixel a square
    block (nearest neighbour: no new values); min_pixels=0 keeps one PNG pixel per image pixel."""
    count = images.shape[0]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = torch.zeros((rows * columns, *images.shape[1:]), dtype=torch.uint8)
    tiles[:count] = to_uint8(images).cpu()
    return _png(_grid_image(tiles, rows, columns, min_pixels))


def png_class_grid(images: torch.Tensor, labels, class_names=None, min_pixels: int = MIN_GRID_PIXELS) -> bytes:
    """The images of a class-conditional sampling as one PNG with one row per class: the classes in increasing
    order, each row its samples in their order (black where a class has fewer than the longest row), and the
    class's name (or "class K" without names) written left of its row. images: float [N, C, H, W] in [-1, 1];
    labels: N class indices (ints or an integer tensor); class_names: a name per index, or None."""
    labels = [int(label) for label in labels]
    if len(labels) != images.shape[0]:
        raise ValueError(f"labels must hold one class per image: {images.shape[0]}, got {len(labels)}")
    classes = sorted(set(labels))
    members = [[i for i, label in enumerate(labels) if label == k] for k in classes]
    rows, columns = len(classes), max(len(indices) for indices in members)
    pixels = to_uint8(images).cpu()
    tiles = torch.zeros((rows * columns, *images.shape[1:]), dtype=torch.uint8)
    for row, indices in enumerate(members):
        tiles[row * columns:row * columns + len(indices)] = pixels[indices]
    image = _grid_image(tiles, rows, columns, min_pixels)
    names = [class_names[k] if class_names is not None and 0 <= k < len(class_names) else f"class {k}"
             for k in classes]
    return _png(_label_rows(image, names))


def _grid_image(tiles: torch.Tensor, rows: int, columns: int, min_pixels: int):
    """uint8 tiles [rows·columns, C, H, W] → a PIL image, enlarged pixel for pixel to at least min_pixels."""
    from PIL import Image

    _, channels, height, width = tiles.shape
    grid = tiles.view(rows, columns, channels, height, width).permute(0, 3, 1, 4, 2)
    array = grid.reshape(rows * height, columns * width, channels).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    longer = max(image.size)
    if 0 < longer < min_pixels:
        factor = math.ceil(min_pixels / longer)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


def _label_rows(image, names: list[str]):
    """The grid with a black margin on its left holding each row's name, in white, centred on the row."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(max(10, min(24, image.height / len(names) / 4)))  # readable beside a row, never taller than it
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    measure = ImageDraw.Draw(image)
    boxes = [measure.textbbox((0, 0), name, font=font) for name in names]
    margin = max(box[2] - box[0] for box in boxes) + 12
    labelled = Image.new(image.mode, (image.width + margin, image.height), 0)
    labelled.paste(image, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    white = {"L": 255, "RGB": (255, 255, 255), "RGBA": (255, 255, 255, 255)}.get(image.mode, 255)
    row_height = image.height / len(names)
    for row, (name, box) in enumerate(zip(names, boxes)):
        top = row * row_height + (row_height - (box[3] - box[1])) / 2 - box[1]
        draw.text((6, top), name, fill=white, font=font)
    return labelled


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: Union[str, os.PathLike], images: torch.Tensor, min_pixels: int = MIN_GRID_PIXELS, *,
              labels=None, class_names=None) -> None:
    """Write png_grid(images) atomically; with `labels` (a class per image, two classes or more) png_class_grid,
    one row per class, named from `class_names`."""
    if labels is not None and len({int(label) for label in labels}) > 1:
        data = png_class_grid(images, labels, class_names, min_pixels)
    else:
        data = png_grid(images, min_pixels)
    files.atomic_write_bytes(path, data)
