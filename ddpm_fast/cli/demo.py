"""`ddpm-fast demo`: train the tiny U-Net on the embedded shapes, then sample it with FastSampler and with the
seed's naive loop, timed in one run, and check the samples' quality.

On a fresh, quiet 2-core CPU it takes about two minutes: 1200 steps at 16×16 (a few minutes of training is enough for
shapes at that size, not at 32×32), then both samplers on the same trained EMA weights. On a GPU the same command
trains 4000 steps of batch 128 at 32×32. Files go to --run-dir:
data.png (training images), samples.png (FastSampler), naive_samples.png (the seed loop), forward_process.png (a
photograph noised by q_sample, linear and cosine schedules), reverse_walk.png (one chain of the trained model: x_t and
its predicted x0), loss.png, log.jsonl and the checkpoint (`ddpm-fast sample --checkpoint RUN_DIR --out more.png`
samples it again).
"""

from __future__ import annotations

import os
import pathlib
import time
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .. import reference
from ..data.images import save_grid
from ..models import checkpoints
from ..sampling.sampler import FastSampler
from ..schedule import NoiseSchedule
from ..training.config import TrainingConfig
from ..training.objectives import AsEpsilonModel

CHECK_STEPS = 10  # the equality check runs a short chain: it proves the same math, not the speed
# The short quality-against-time table: (method, model calls), each capped at half the chain's T. The full version,
# with the spread over seeds that tells a difference from noise, is `ddpm-fast bench --suite quality`.
FEWER_STEPS = (("ddim", 20), ("dpm_solver++", 10), ("sde_dpm_solver++", 20))
METHOD_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm_solver++": "DPM-Solver++", "sde_dpm_solver++": "SDE-DPM-Solver++"}
HELD_OUT_IMAGES = 256
# Why samples.png and naive_samples.png are not the same pictures: each sampler is timed drawing noise its own
# way (FastSampler by seed, its default and its speed; the seed's loop from torch's global stream). The equality
# check puts both on one torch stream instead.
GRIDS_DIFFER = ("the two grids differ image by image: FastSampler draws its noise by seed (counter-based, the same "
                "in any batch), the naive loop from torch's global stream; given the same noise they agree (the "
                "check above)")


class DemoInterrupted(Exception):
    """The demo's training was stopped by SIGINT / SIGTERM (signal: its number); the checkpoint is written."""

    def __init__(self, message: str, signal: Optional[int]):
        super().__init__(message)
        self.signal = signal


@dataclass
class DemoPlan:
    """How much the demo does on a device: training steps and batch, the chain length T, samples drawn."""

    steps: int
    batch_size: int
    timesteps: int
    num_samples: int
    image_size: int
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    # What the U-Net predicts. Early in training an ε-model's small errors at high noise are amplified along the
    # chain (samples saturate); predicting v keeps the chain stable after a few hundred steps. The seed's loop, which
    # knows only ε, samples the same model through AsEpsilonModel (the same step, written in ε).
    prediction_type: str = "v_prediction"
    min_snr_gamma: Optional[float] = 5.0


CPU_PLAN = DemoPlan(steps=1200, batch_size=32, timesteps=250, num_samples=64, image_size=16)
GPU_PLAN = DemoPlan(steps=4000, batch_size=128, timesteps=1000, num_samples=64, image_size=32, learning_rate=5e-4,
                    warmup_steps=200)


def _seed_arguments(schedule: NoiseSchedule, device: torch.device) -> tuple:
    terms = reference.schedule_terms(schedule.betas.to(device=device, dtype=torch.float32))
    return (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _naive_samples(model, schedule: NoiseSchedule, num_samples: int, image_size: int,
                   device: torch.device) -> tuple[torch.Tensor, float]:
    """The seed's sampling loop (fp32, eager, one op at a time): its images and its wall time."""
    arguments = _seed_arguments(schedule, device)
    warm_steps = min(2, schedule.num_timesteps)  # the model's own t range: a T = 1 model has only t = 0
    warm = _seed_arguments(NoiseSchedule.linear(warm_steps), device)
    reference.sample(model, num_samples, image_size, warm_steps, *warm)  # first-call costs are not the loop's
    _synchronize(device)
    start = time.perf_counter()
    images = reference.sample(model, num_samples, image_size, schedule.num_timesteps, *arguments)
    _synchronize(device)
    return images, time.perf_counter() - start


def _max_difference(model, prediction_type: str, num_samples: int, image_size: int, device: torch.device,
                    seed: int) -> float:
    """max |FastSampler − reference| over a short chain, both in fp32 and drawing their noise from one torch stream."""
    schedule = NoiseSchedule.linear(CHECK_STEPS)
    sampler = FastSampler(model, schedule, (3, image_size, image_size), prediction_type=prediction_type,
                          dtype=torch.float32, compile=False, cuda_graphs=False)
    generator = torch.Generator(device).manual_seed(seed)
    fast = sampler.sample(num_samples, generator=generator)
    torch.manual_seed(seed)
    naive = reference.sample(AsEpsilonModel(model, schedule, prediction_type), num_samples, image_size, CHECK_STEPS,
                             *_seed_arguments(schedule, device))
    return (fast - naive).abs().max().item()


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_demo(run_dir: Union[str, os.PathLike] = "runs/demo", *, steps: Optional[int] = None,
             batch_size: Optional[int] = None, timesteps: Optional[int] = None, num_samples: Optional[int] = None,
             device: str = "auto", seed: int = 0, progress: bool = True, compile: Optional[bool] = None) -> dict:
    """Train (or finish training) the tiny U-Net in run_dir, sample it both ways, print times, ratio and quality.

    Arguments left None come from the device's plan (CPU_PLAN / GPU_PLAN). compile: FastSampler's torch.compile
    (None: its default). Returns the figures printed."""
    from ..data.datasets import ShapesDataset
    from ..evaluation.metrics import quality_report
    from ..evaluation.pictures import forward_process_figure, photo, reverse_walk_figure
    from ..training.trainer import Trainer

    dev = _device(device)
    plan = GPU_PLAN if dev.type == "cuda" else CPU_PLAN
    run_dir = pathlib.Path(run_dir)
    if checkpoints.has_checkpoints(run_dir):
        # A demo run is here: its stored setup, changed only where asked (steps: train further; the others must
        # repeat it), so a second demo samples the trained run again whatever the first one was given.
        asked = {"steps": steps, "batch_size": batch_size, "num_train_timesteps": timesteps}
        trainer = Trainer({name: value for name, value in asked.items() if value is not None}, run_dir, device=dev,
                          resume=True, progress=progress)
        if trainer.config.data != "shapes" or trainer.config.class_conditional:
            raise ValueError(f"{run_dir} holds a training run of other data ({trainer.config.data}"
                             f"{', class-conditional' if trainer.config.class_conditional else ''}), not a demo run")
    else:
        steps = steps or plan.steps
        config = TrainingConfig(data="shapes", image_size=plan.image_size, steps=steps,
                                batch_size=batch_size or plan.batch_size,
                                num_train_timesteps=timesteps or plan.timesteps, learning_rate=plan.learning_rate,
                                warmup_steps=min(plan.warmup_steps, steps), checkpoint_every=max(steps // 2, 1),
                                log_every=max(min(25, steps // 4), 1), seed=seed,
                                sample_count=num_samples or plan.num_samples, prediction_type=plan.prediction_type,
                                min_snr_gamma=plan.min_snr_gamma)
        trainer = Trainer(config, run_dir, device=dev, resume=True, progress=progress)
    steps, batch_size = trainer.config.steps, trainer.config.batch_size
    timesteps, size = trainer.config.num_train_timesteps, trainer.config.image_size
    num_samples = num_samples or plan.num_samples
    print(f"ddpm_fast demo on {dev}: tiny U-Net ({trainer.model.num_parameters():,} parameters), "
          f"{len(trainer.dataset)} generated {size}x{size} shapes, T={timesteps}, global batch {batch_size}", flush=True)
    if trainer.step >= steps:
        print(f"  {run_dir} already holds a run trained to step {trainer.step}; delete it to train again")
    summary = trainer.train()
    if summary.interrupted:  # Ctrl-C / a kill: what was trained is saved; sampling a half-trained model is not asked
        raise DemoInterrupted(f"training stopped at step {summary.step} by a signal; checkpoint {summary.checkpoint} "
                              "(a second demo on this folder trains on from it)", trainer.stop_signal)
    if summary.steps_this_run:
        print(f"  trained {summary.steps_this_run} steps in {summary.seconds:.1f} s "
              f"({summary.images_per_second:.1f} images/s), last loss {summary.final_loss:.4f}", flush=True)

    model = trainer.ema.model.eval()
    schedule = trainer.schedule
    epsilon_model = AsEpsilonModel(model, schedule, trainer.config.prediction_type)
    with torch.no_grad():
        torch.manual_seed(seed)
        naive, naive_s = _naive_samples(epsilon_model, schedule, num_samples, size, dev)
        print(f"  naive reference (the seed's loop, fp32 eager), {num_samples} samples x {timesteps} steps: "
              f"{naive_s:8.2f} s", flush=True)

        sampler = FastSampler(model, schedule, trainer.sample_shape, prediction_type=trainer.config.prediction_type,
                              compile=compile)
        setup_s = sampler.warm_up(num_samples)
        fast = sampler.sample(num_samples, seed=seed)
        report = sampler.last_report  # what ran, after the fact (a fast path that fell back says so here)
        fast_s = report.sampling_seconds
        options = (f"{str(sampler.dtype).replace('torch.', '')}, "
                   f"{'channels-last' if sampler.channels_last else 'NCHW'}, "
                   f"{'compiled' if report.compiled else 'eager'}, "
                   f"{'CUDA graphs' if report.cuda_graphs else 'no graphs'}"
                   f"{', FELL BACK' if report.fell_back else ''}")
        print(f"  FastSampler ({options}): {fast_s:8.2f} s   speed-up {naive_s / fast_s:.2f}x   "
              f"(setup, once per batch size: {setup_s:.1f} s)\n"
              f"    {report.compile_reason}", flush=True)
        difference = _max_difference(model, trainer.config.prediction_type, min(num_samples, 4), size, dev, seed + 1)
        print(f"  same noise, fp32, {CHECK_STEPS}-step chain: max |fast - naive| = {difference:.1e}")

    held_out = torch.stack(list(ShapesDataset.held_out(HELD_OUT_IMAGES, size, seed)))
    report = quality_report(fast.cpu(), held_out, seed=seed)
    print("  quality: " + report.format().replace("\n", "\n  "))
    fewer = _fewer_steps(sampler, num_samples, seed, timesteps, fast_s, report, held_out)

    save_grid(run_dir / "samples.png", fast)
    save_grid(run_dir / "naive_samples.png", naive)
    # DDPM's two processes in pictures: a real photograph noised step by step, and the trained model's walk back.
    if not (run_dir / "forward_process.png").exists():  # the photo and the run's seed fix it: drawn once per run
        forward_process_figure(photo(), run_dir / "forward_process.png", seed=seed)
    reverse_walk_figure(model, schedule, trainer.sample_shape, run_dir / "reverse_walk.png",
                        prediction_type=trainer.config.prediction_type, variance_type=trainer.config.variance_type,
                        seed=seed, device=dev)
    print(f"  wrote {run_dir / 'samples.png'} (FastSampler), {run_dir / 'naive_samples.png'} (naive loop), "
          f"{run_dir / 'data.png'} (training data), {run_dir / 'loss.png'}, "
          f"{run_dir / 'forward_process.png'} (a photo, noised) and {run_dir / 'reverse_walk.png'} (one chain)\n"
          f"  {GRIDS_DIFFER}")
    return {"naive_s": naive_s, "fast_s": fast_s, "setup_s": setup_s, "speedup": naive_s / fast_s,
            "max_abs_difference": difference, "train_steps": summary.steps_this_run,
            "train_seconds": summary.seconds, "final_loss": summary.final_loss, "quality": report.as_dict(),
            "fewer_steps": fewer}


def _fewer_steps(sampler: FastSampler, num_samples: int, seed: int, timesteps: int, full_seconds: float,
                 full_report, held_out: torch.Tensor) -> list[dict]:
    """The same model and seed sampled in fewer model calls (FEWER_STEPS), each row's sampling seconds and rf_kid
    beside full DDPM's, printed as a short table; returns the rows."""
    from ..evaluation.metrics import quality_report

    rows = [{"method": "ddpm", "model_calls": timesteps, "seconds": full_seconds,
             "rf_kid": full_report.primary}]
    for method, calls in FEWER_STEPS:
        calls = min(calls, max(timesteps // 2, 1))
        with torch.no_grad():
            images = sampler.sample(num_samples, seed=seed, method=method, num_inference_steps=calls)
        rows.append({"method": method, "model_calls": calls, "seconds": sampler.last_report.sampling_seconds,
                     "rf_kid": quality_report(images.cpu(), held_out, seed=seed).primary})
    figures = full_report.figures
    print(f"  fewer model calls (same model and seed, {full_report.n} samples per row; rf_kid floor "
          f"{figures['real']['rf_kid']:.2g}, noise ceiling {figures['noise']['rf_kid']:.2g}; one seed only: "
          "`ddpm-fast bench --suite quality` gives the spread over seeds):")
    for row in rows:
        label = METHOD_NAMES[row["method"]] + (f", all {timesteps} steps" if row["method"] == "ddpm" else "")
        speed = "(the reference)" if row["method"] == "ddpm" else f"({full_seconds / row['seconds']:.1f}x less time)"
        print(f"    {label:<24} {row['model_calls']:5d} calls {row['seconds']:8.2f} s  {speed:<18} "
              f"rf_kid {row['rf_kid']:.4f}")
    return rows
