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
    from PIL import Image

    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = torch.zeros((rows * columns, channels, height, width), dtype=torch.uint8)
    tiles[:count] = to_uint8(images).cpu()
    grid = tiles.view(rows, columns, channels, height, width).permute(0, 3, 1, 4, 2)
    array = grid.reshape(rows * height, columns * width, channels).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    longer = max(image.size)
    if 0 < longer < min_pixels:
        factor = math.ceil(min_pixels / longer)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: Union[str, os.PathLike], images: torch.Tensor, min_pixels: int = MIN_GRID_PIXELS) -> None:
    files.atomic_write_bytes(path, png_grid(images, min_pixels))
