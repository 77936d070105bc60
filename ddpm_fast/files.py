"""Safe file writing and reading: atomic writes (temp file + fsync + rename) and safetensors without pickle.

A crash mid-write leaves the previous file (or none) in place, never a truncated one.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)  # make the rename itself durable


def fsync_directory(path: PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where the platform cannot."""
    try:
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def atomic_write_json(path: PathLike, data: dict) -> None:
    atomic_write_bytes(path, json_bytes(data))


def read_json(path: PathLike) -> dict:
    path = pathlib.Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def save_tensors(path: PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (dense CPU copies; channels-last weights are stored in standard order)."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes (dense CPU copies; channels-last weights are stored in standard order)."""
    dense = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return save_safetensors_bytes(dense, metadata=metadata)


def load_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file is a ValueError/FileNotFoundError naming it."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    return parse_safetensors(path, data)


def parse_safetensors(path: PathLike, data: bytes) -> dict[str, torch.Tensor]:
    """The tensors in `data`, the bytes read from `path`; a truncated or corrupt file is a ValueError naming it."""
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
