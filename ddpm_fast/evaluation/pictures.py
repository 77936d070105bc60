"""DDPM's intuition in pictures, drawn by the package's own functions (matplotlib, Agg backend; PNG files, or JPEG
where the path ends in .jpg, written atomically). `ddpm-fast demo` writes the first two into its run folder; the
docs' "How DDPM works" page shows all three.

    forward_process_figure(photo(), "forward.png")           # x_t at t = 0 … 999, linear and cosine, from q_sample
    reverse_walk_figure(model, schedule, (3, 16, 16), "walk.png", prediction_type="v_prediction")
    snr_figure("snr.png")                                     # log SNR(t) of each schedule

The photograph shipped for the forward process is Chelsea the cat by Stefan van der Walt, CC0 1.0 (a public-domain
dedication), as scikit-image ships it (`skimage/data/chelsea.png`), cropped to the face and resized to 128×128.
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Callable, Optional, Sequence, Union

import torch

from .. import files
from ..diffusion import p_step, q_sample, seed_tensor
from ..models.output import unwrap_model_output
from ..sampling.chain import initial_sample
from ..schedule import NoiseSchedule
from .likelihood import predicted_x0, split_learned_output

PathLike = Union[str, os.PathLike]

PHOTO = pathlib.Path(__file__).resolve().parents[1] / "data" / "chelsea.png"
PHOTO_CREDIT = ("Chelsea the cat, photograph by Stefan van der Walt, CC0 1.0 (public domain), "
                "from scikit-image's sample data")
FORWARD_TIMESTEPS = (0, 50, 100, 200, 400, 700, 999)
REVERSE_FRAMES = 6


def photo() -> torch.Tensor:
    """The shipped photograph (PHOTO, PHOTO_CREDIT) as float32 [3, 128, 128] in [-1, 1]."""
    from PIL import Image  # Pillow: a dependency, imported where used as data/images.py does

    with Image.open(PHOTO) as image:
        data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        width, height = image.size
    return data.view(height, width, 3).permute(2, 0, 1).float() / 127.5 - 1.0


def _default_schedules(num_timesteps: int) -> dict[str, NoiseSchedule]:
    return {"linear": NoiseSchedule.linear(num_timesteps), "cosine": NoiseSchedule.cosine(num_timesteps)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _as_picture(image: torch.Tensor):
    """[C, H, W] in [-1, 1] → an HWC (or HW) numpy array in [0, 1] for imshow."""
    picture = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return picture[:, :, 0] if picture.shape[2] == 1 else picture


def _save(figure, path: PathLike, pyplot) -> pathlib.Path:
    """PNG, or JPEG where `path` ends in .jpg / .jpeg (noise tiles compress poorly in a PNG: the docs keep JPEGs)."""
    jpeg = pathlib.Path(path).suffix.lower() in (".jpg", ".jpeg")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg" if jpeg else "png", **({"pil_kwargs": {"quality": 88}} if jpeg else {}))
    pyplot.close(figure)
    files.atomic_write_bytes(path, buffer.getvalue())
    return pathlib.Path(path)


def forward_process(image: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int] = FORWARD_TIMESTEPS,
                    seed: int = 0) -> torch.Tensor:
    """x_t of one image at each of `timesteps`, from `q_sample`: float32 [len(timesteps), C, H, W].

    image: float32 [C, H, W] in [-1, 1]. Every x_t uses the same ε (drawn once by q_sample from Philox `seed`), so
    the columns differ only by how much signal the schedule keeps: x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε. A timestep
    outside [0, T) is a ValueError naming `t` (from q_sample)."""
    x0 = image.float().unsqueeze(0)
    _, eps = q_sample(x0, 0, schedule, seed=seed)
    count = len(timesteps)
    batch = x0.expand(count, *x0.shape[1:]).contiguous()
    t = torch.tensor(list(timesteps), dtype=torch.int64, device=x0.device)
    x_t, _ = q_sample(batch, t, schedule, noise=eps.expand_as(batch).contiguous())
    return x_t


def forward_process_figure(image: torch.Tensor, path: PathLike, *,
                           schedules: Optional[dict[str, NoiseSchedule]] = None,
                           timesteps: Sequence[int] = FORWARD_TIMESTEPS, seed: int = 0,
                           credit: Optional[str] = PHOTO_CREDIT, dpi: int = 110) -> pathlib.Path:
    """One row per schedule (default: linear and cosine, T = 1000) of `forward_process` at `timesteps`, each tile
    titled with t and the signal it keeps, sqrt(ᾱ_t). image: float32 [C, H, W] in [-1, 1] (`photo()`). Writes a
    PNG to `path` (`dpi` dots per inch; each tile is 1.45 inches wide) and returns it; `credit` (None: none) is
    printed under the figure."""
    schedules = schedules or _default_schedules(max(timesteps) + 1)
    pyplot = _pyplot()
    rows, columns = len(schedules), len(timesteps)
    figure, axes = pyplot.subplots(rows, columns, figsize=(1.45 * columns, 2.0 * rows + 0.2), dpi=dpi,
                                   squeeze=False)
    for row, (name, schedule) in enumerate(schedules.items()):
        x_t = forward_process(image, schedule, timesteps, seed)
        signal = schedule.sqrt_alphas_cumprod[list(timesteps)]
        for column, t in enumerate(timesteps):
            axis = axes[row][column]
            axis.imshow(_as_picture(x_t[column]), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"t = {t}\n" + r"$\sqrt{\bar\alpha_t}$" + f" = {float(signal[column]):.2f}", fontsize=8)
            if column == 0:
                axis.set_ylabel(name, fontsize=9)
    figure.suptitle("Forward process q(x_t | x_0): the same photo and the same noise, two schedules", fontsize=10)
    if credit:
        figure.text(0.5, 0.005, credit, ha="center", va="bottom", fontsize=6, color="0.4")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(figure, path, pyplot)


def reverse_walk(model: Callable, schedule: NoiseSchedule, sample_shape: Sequence[int], *,
                 prediction_type: str = "epsilon", variance_type: str = "fixed_small", seed: int = 0,
                 frames: int = REVERSE_FRAMES, device: Union[str, torch.device] = "cpu"
                 ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """One full DDPM chain of one sample, walked with `p_step` from x_T (Philox `seed`, as FastSampler's
    `sample(1, seed=seed)` draws it, so the last x equals that sample), keeping `frames` snapshots.

    Returns (timesteps, x_t, predicted x0): the `frames` timesteps (evenly spaced from T-1 down to 0), float32
    [frames + 1, *sample_shape] of x_t at each and, as a last row, the chain's end clamped to [-1, 1] as FastSampler
    returns it, and float32 [frames, *sample_shape] of the model's estimate of x0 at each (clipped to [-1, 1]).
    model(x_t, t) must predict `prediction_type` (a learned-range model's 2C channels too); it runs once per
    timestep, under no_grad. A bad prediction_type or variance_type is a ValueError naming it (from p_step)."""
    device = torch.device(device)
    steps = schedule.num_timesteps
    frames = max(1, min(int(frames), steps))
    keep = sorted({round((steps - 1) * (1 - i / max(frames - 1, 1))) for i in range(frames)}, reverse=True)
    x = initial_sample((1, *sample_shape), device, seed_tensor(seed, device), None)
    snapshots, estimates = [], []
    with torch.no_grad():
        for t in range(steps - 1, -1, -1):
            t_batch = torch.full((1,), t, dtype=torch.int64, device=device)
            output = unwrap_model_output(model(x, t_batch)).float()
            if t in keep:
                prediction = (split_learned_output(output, x.shape[1])[0] if variance_type == "learned_range"
                              else output)
                snapshots.append(x[0].clone())
                estimates.append(predicted_x0(prediction, x, t_batch, schedule, prediction_type)[0].clamp(-1, 1))
            x = p_step(output, t_batch, x, schedule, seed=seed, prediction_type=prediction_type,
                       variance_type=variance_type)
    snapshots.append(x[0].clamp(-1, 1))  # the sample as FastSampler returns it
    return keep, torch.stack(snapshots), torch.stack(estimates)


def reverse_walk_figure(model: Callable, schedule: NoiseSchedule, sample_shape: Sequence[int], path: PathLike, *,
                        prediction_type: str = "epsilon", variance_type: str = "fixed_small", seed: int = 0,
                        frames: int = REVERSE_FRAMES, device: Union[str, torch.device] = "cpu") -> pathlib.Path:
    """`reverse_walk` drawn as two rows: x_t at each kept timestep (and the chain's end), and the model's predicted
    x0 there. Writes a PNG to `path` and returns it."""
    keep, snapshots, estimates = reverse_walk(model, schedule, sample_shape, prediction_type=prediction_type,
                                              variance_type=variance_type, seed=seed, frames=frames, device=device)
    pyplot = _pyplot()
    columns = len(keep) + 1
    figure, axes = pyplot.subplots(2, columns, figsize=(1.45 * columns, 3.6), dpi=110, squeeze=False)
    for column in range(columns):
        top, bottom = axes[0][column], axes[1][column]
        top.imshow(_as_picture(snapshots[column]), interpolation="nearest")
        top.set_title(f"t = {keep[column]}" if column < len(keep) else "the sample", fontsize=9)
        if column < len(keep):
            bottom.imshow(_as_picture(estimates[column]), interpolation="nearest")
        else:
            bottom.axis("off")
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0][0].set_ylabel(r"$x_t$", fontsize=11)
    axes[1][0].set_ylabel(r"model's $\hat{x}_0$ at $t$", fontsize=10)
    figure.suptitle(f"Reverse process: one chain of {schedule.num_timesteps} DDPM steps, seed {seed}", fontsize=10)
    figure.tight_layout()
    return _save(figure, path, pyplot)


def snr_figure(path: PathLike, schedules: Optional[dict[str, NoiseSchedule]] = None,
               num_timesteps: int = 1000) -> pathlib.Path:
    """log10 of the signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) against t, one curve per schedule (default:
    linear, cosine, scaled_linear and sigmoid at `num_timesteps`). Writes a PNG to `path` and returns it."""
    if schedules is None:
        schedules = {name: getattr(NoiseSchedule, name)(num_timesteps)
                     for name in ("linear", "cosine", "scaled_linear", "sigmoid")}
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(6.4, 3.6), dpi=110)
    for name, schedule in schedules.items():
        snr = schedule.alphas_cumprod / schedule.one_minus_alphas_cumprod
        axis.plot(range(schedule.num_timesteps), snr.log10().numpy(), label=name, linewidth=1.5)
    axis.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
    axis.set_xlabel("t")
    axis.set_ylabel(r"$\log_{10}$ SNR(t) $= \log_{10} \bar\alpha_t\,/\,(1 - \bar\alpha_t)$")
    axis.set_title("Signal-to-noise ratio of each schedule (SNR = 1 on the dashed line)", fontsize=10)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return _save(figure, path, pyplot)
