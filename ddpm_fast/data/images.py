"""Image grids: float32 [N, C, H, W] in [-1, 1] → one PNG (samples, training data), written atomically."""

from __future__ import annotations

import io
import math
import os
from typing import Union

import torch

from .. import files


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 [N, C, H, W], on the images' device (FastSampler's output_type="uint8" is this, NHWC)."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def png_grid(images: torch.Tensor) -> bytes:
    """The images as one PNG: ceil(sqrt(N)) columns, row by row, black where the last row runs short."""
    from PIL import Image

    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tiles = torch.zeros((rows * columns, channels, height, width), dtype=torch.uint8)
    tiles[:count] = to_uint8(images).cpu()
    grid = tiles.view(rows, columns, channels, height, width).permute(0, 3, 1, 4, 2)
    array = grid.reshape(rows * height, columns * width, channels).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: Union[str, os.PathLike], images: torch.Tensor) -> None:
    files.atomic_write_bytes(path, png_grid(images))
