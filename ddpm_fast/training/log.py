"""The training log: one JSON object per line (log.jsonl), the loss curve drawn from it (loss.png), and optionally
the same figures and the sample grids as TensorBoard events (tensorboard/)."""

from __future__ import annotations

import io
import json
import os
import pathlib
import warnings
from typing import Any, Union

from .. import files

PathLike = Union[str, os.PathLike]


TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_SCALARS = ("loss", "lr", "grad_norm", "images_per_second", "ema_decay")


def check_tensorboard() -> None:
    """ValueError when the tensorboard package (which torch.utils.tensorboard writes with) is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ValueError("tensorboard=True (--tensorboard) needs the tensorboard package: pip install tensorboard") \
            from None


class TensorBoardLog:
    """TensorBoard events in run_dir/tensorboard: the log records' scalars as train/<name>, and image grids.

    A resumed run opens the writer with purge_step = its start + 1, so TensorBoard drops the events a killed run
    wrote after its checkpoint (and keeps the checkpoint step's own), as JsonlLog.truncate_after drops its records.
    """

    def __init__(self, run_dir: PathLike, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(pathlib.Path(run_dir) / TENSORBOARD_DIR),
                                    purge_step=start_step + 1 if start_step else None)

    def write(self, record: dict[str, Any]) -> None:
        for name in TENSORBOARD_SCALARS:
            if name in record:
                self.writer.add_scalar(f"train/{name}", record[name], record["step"])
        self.writer.flush()

    def images(self, tag: str, images, step: int) -> None:
        """images: float [N, C, H, W] in [-1, 1], shown as one grid."""
        self.writer.add_images(tag, (images.detach().float().cpu() + 1) / 2, step, dataformats="NCHW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class JsonlLog:
    """Appends records to a JSONL file, flushed per line so a killed run keeps what it logged."""

    def __init__(self, path: PathLike):
        self.path = pathlib.Path(path)
        self._handle = None

    def truncate_after(self, step: int) -> None:
        """Keep only records with record["step"] <= step (a resumed run re-logs the steps after its checkpoint)."""
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step] if self.path.exists() else []
        files.atomic_write_bytes(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file (a last line cut short by a kill is ignored)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_loss_curve(log_path: PathLike, png_path: PathLike) -> bool:
    """Draw loss against step from the log into a PNG (atomically). False (with a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss curve drawn", RuntimeWarning, stacklevel=2)
        return False
    records = [r for r in read_jsonl(log_path) if "loss" in r]
    if not records:
        return False
    figure, axes = pyplot.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot([r["step"] for r in records], [r["loss"] for r in records], linewidth=1)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (mean since the previous point)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    files.atomic_write_bytes(png_path, buffer.getvalue())
    return True
