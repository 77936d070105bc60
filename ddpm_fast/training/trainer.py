"""ddpm_fast.Trainer: train a DDPM U-Net — fused q-sample, AdamW, EMA, checkpoints, resume, DDP under torchrun.

    config = TrainingConfig(data="shapes", steps=2000, batch_size=64)
    trainer = Trainer(config, "runs/shapes")            # Trainer(..., resume=True) continues the last checkpoint
    summary = trainer.train()
    images = trainer.sampler().sample(16, seed=0)       # the EMA weights, through FastSampler

Every step's images, timesteps, flips and noise are functions of (seed, step) (training/batches.py), so a run killed
and resumed from its checkpoint logs the same losses as one that ran through, and N processes under torchrun train
on the same global batches as one. Rank 0 writes the checkpoints, the log and the pictures.

Files in the run folder: log.jsonl (one record per log_every steps), loss.png, data.png (a grid of training
images), samples/step-XXXXXXXX.png (EMA samples every sample_every steps), checkpoints/step-XXXXXXXX/
(models/checkpoints.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pathlib
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from ..checks import ParameterError
from ..data.images import save_grid
from ..data.datasets import LabelledImages, dataset_labels, open_dataset
from ..diffusion_setup import DiffusionSetup
from ..models.unet import UNet
from ..sampling.distributed import communication_device, resolve_device
from ..sampling.sampler import FastSampler
from ..schedule import NoiseSchedule
from ..models import checkpoints
from .batches import GlobalBatchSampler, flip_horizontally, label_drops, rank_slice, step_draws, step_key
from .config import TrainingConfig
from .ema import EMA
from .log import JsonlLog, TensorBoardLog, check_tensorboard, plot_loss_curve
from .objectives import diffusion_loss
from .objectives import hybrid_loss

# Settings a resumed run may change; any other difference from the checkpoint's config is refused.
RUN_MARKERS = ("checkpoints", "log.jsonl")  # what a run folder holds once training has started
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every", "sample_count",
                     "sample_steps", "num_workers", "compile", "skip_unreadable_images", "tensorboard")


def build_schedule(config: TrainingConfig) -> NoiseSchedule:
    """The config's schedule, as NoiseSchedule names it (linear β scale by 1000/T at any T, see NoiseSchedule.linear)."""
    return getattr(NoiseSchedule, config.schedule)(config.num_train_timesteps)


@dataclass
class TrainingSummary:
    step: int  # steps done in all (including those before a resume)
    steps_this_run: int
    seconds: float
    images_per_second: float  # global images per second over this run's steps
    final_loss: Optional[float]
    checkpoint: Optional[pathlib.Path]
    interrupted: bool


class Trainer:
    """See the module docstring. Arguments:

    config: a TrainingConfig. With resume=True it may also be None (the run's stored config, as it was) or a dict
        of changes to the stored config (e.g. {"steps": 20000}): a resumed run reads its setup from its checkpoint,
        and a setting given that contradicts it (other than RESUMABLE_CHANGES) is a ValueError naming both values.
        A run folder with no checkpoint yet starts afresh, from TrainingConfig(**changes).
    run_dir: where the run's files go.
    dataset: a Dataset of float [C, H, W] images in [-1, 1]; default open_dataset(config.data, config.image_size).
    device: "auto" (cuda:LOCAL_RANK under torchrun, cuda, else cpu), or a device.
    resume: continue from the run folder's last good checkpoint (a fresh start when it has none). Without it, a run
        folder that already holds checkpoints is refused rather than overwritten. A config.steps below the step the
        run has reached is a ValueError (steps counts from the run's start).
    progress: a tqdm bar on rank 0.
    """

    def __init__(self, config: TrainingConfig, run_dir: Union[str, os.PathLike], *, dataset=None,
                 device: Union[str, torch.device, None] = "auto", resume: bool = False, progress: bool = True):
        if not isinstance(config, TrainingConfig) and not (resume and (config is None or isinstance(config, dict))):
            raise TypeError(f"config must be a TrainingConfig (or, with resume=True, None or a dict of changes to the "
                            f"stored one), got {type(config).__name__}")
        self.run_dir = pathlib.Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run_dir {self.run_dir} is a file, not a folder")
        if (self.run_dir.is_dir() and not any((self.run_dir / name).exists() for name in RUN_MARKERS)
                and any(self.run_dir.iterdir())):  # a data folder, say: checkpoints and PNGs would land among its files
            raise ValueError(f"run_dir {self.run_dir} holds other files and is no training run (it has no "
                             f"{' or '.join(RUN_MARKERS)}): choose a new or empty folder")
        self.rank, self.world_size = _process_group()
        self.device = resolve_device(device)
        self.progress = progress

        checkpoint = checkpoints.latest_checkpoint(self.run_dir) if resume else None
        if checkpoint is None and not resume and checkpoints.has_checkpoints(self.run_dir):
            raise ValueError(f"run_dir {self.run_dir} already holds checkpoints: pass resume=True (--resume) to "
                             "continue it, or choose another folder")
        if checkpoint is not None:
            config = _resumed_config(checkpoint, config)
            if config.steps < checkpoint.step:  # would train nothing, silently
                raise ParameterError("steps", lambda term: (
                    f"{term('steps')} {config.steps} is below the step the run has reached ({checkpoint.step}, "
                    f"{checkpoint.path}): {term('steps')} counts from the run's start; give more than "
                    f"{checkpoint.step} to train further"))
        elif not isinstance(config, TrainingConfig):  # nothing to resume: a fresh start from the changes given
            config = TrainingConfig(**(config or {}))
        if checkpoint is None:  # the run folder records where its data is, so it resumes from any directory
            config = replace(config, data=_absolute_data(config.data))
        self.config = config
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                             f"{self.world_size}")

        if config.tensorboard and self.rank == 0:
            check_tensorboard()
        if dataset is None:
            dataset = open_dataset(config.data, config.image_size, skip_unreadable=config.skip_unreadable_images,
                                   key=config.data_key, value_range=config.data_range)
        self.dataset = dataset
        if len(dataset) < config.batch_size:  # found before any file is made, not when the first batch is drawn
            raise ValueError(f"the dataset holds {len(dataset)} images, fewer than one batch of {config.batch_size} "
                             "(lower batch_size, --batch-size)")
        channels = int(getattr(dataset, "channels", 3))
        self.class_names: Optional[tuple[str, ...]] = None
        self._labels = None
        if config.class_conditional:  # found before any file is made
            self._labels, self.class_names = dataset_labels(dataset)
            if checkpoint is not None:
                _check_same_classes(checkpoint, self.class_names)
        self.schedule = build_schedule(config)
        self.sample_shape = (channels, config.image_size, config.image_size)

        on_cuda = self.device.type == "cuda"
        self.channels_last = config.channels_last if config.channels_last is not None else True
        self.compiled = config.compile if config.compile is not None else on_cuda
        self.autocast_dtype = (torch.bfloat16 if config.dtype == "bfloat16" or (config.dtype == "auto" and on_cuda)
                               else None)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

        with torch.random.fork_rng(devices=[]):  # the initial weights, the same on every rank; torch's RNG untouched
            torch.manual_seed(config.seed)
            # a learned-variance model outputs its prediction and the variance's v: 2C channels
            out_channels = 2 * channels if config.variance_type == "learned_range" else channels
            shape = {"sample_size": config.image_size, "in_channels": channels, "out_channels": out_channels}
            if self.class_names is not None:  # one embedding per class, and the null class last
                shape["num_class_embeds"] = len(self.class_names) + (self.null_class_label is not None)
            self.model = UNet.from_preset(config.model, **{**shape, **config.model_overrides})
        self.model.config.check_spatial(config.image_size, config.image_size, "image_size")  # before any file is made
        self.model = self.model.to(self.device, memory_format=memory_format)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           betas=config.adam_betas, weight_decay=config.weight_decay)
        self.step = 0
        self._saved_step: Optional[int] = None
        # Steps whose folders a resume skipped as unusable: pruning must not keep them in place of good ones.
        self._unusable_steps: set[int] = set()
        if checkpoint is not None:
            self._restore(checkpoint)
            self._unusable_steps = set(checkpoints.steps_after(self.run_dir, checkpoint.step))

        network: nn.Module = self.model
        if self.world_size > 1:
            network = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if on_cuda else None)
        self.network = torch.compile(network) if self.compiled else network
        self._memory_format = memory_format
        self._sampler = None
        self._tensorboard: Optional[TensorBoardLog] = None
        self._stop_signalled = False  # set by SIGINT / SIGTERM
        # The signal that stopped this process's training (SIGINT, SIGTERM), None otherwise: the CLI exits 128 + it.
        self.stop_signal: Optional[int] = None
        self._stop = False  # acted on: at once in one process, at the next log step on every rank under torchrun

    # ---------------------------------------------------------------------------------------------- training

    def train(self, steps: Optional[int] = None) -> TrainingSummary:
        """Train up to step `steps` (default config.steps); checkpoint every checkpoint_every steps and at the end.

        SIGINT / SIGTERM (Ctrl-C, torchrun shutting down) finish the current step, write a checkpoint and return
        with interrupted=True."""
        config = self.config
        target = config.steps if steps is None else steps
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if target < self.step:
            raise ValueError(f"steps={target} is below the step this run has reached ({self.step}): steps counts "
                             "from the run's start")
        start_step = self.step
        log = JsonlLog(self.run_dir / "log.jsonl") if self.rank == 0 else None
        if log is not None and config.tensorboard:
            self._tensorboard = TensorBoardLog(self.run_dir, start_step)
        if log is not None:
            log.truncate_after(start_step)
            skipped = getattr(self.dataset, "skipped", None)
            if skipped is not None and self.config.skip_unreadable_images:
                # step = the run's start, so a later resume from this point keeps the record; first 20 paths only
                log.write({"step": start_step, "event": "data", "images": len(self.dataset),
                           "unreadable_skipped": len(skipped), "unreadable": [path for path, _ in skipped[:20]]})
            if start_step == 0:
                self._write_data_grid()
        loader = self._loader(start_step)
        bar = self._progress_bar(start_step, target)
        window_loss = torch.zeros((), device=self.device)
        window_steps, window_start = 0, time.perf_counter()
        run_start = time.perf_counter()
        last_loss: Optional[float] = None
        saved: Optional[pathlib.Path] = None
        grad_norm = None
        try:
            with self._stop_on_signals():
                batches = iter(loader)
                while self.step < target and not self._stop:
                    loss, grad_norm = self.train_step(next(batches))
                    window_loss += loss
                    window_steps += 1
                    if bar is not None:
                        bar.update(1)
                    done = self.step
                    if done % config.log_every == 0 or done == target:
                        last_loss = self._log(log, bar, window_loss / window_steps, grad_norm, window_steps,
                                              time.perf_counter() - window_start)
                        window_loss.zero_()
                        window_steps, window_start = 0, time.perf_counter()
                    self._check_stop(at_log_step=done % config.log_every == 0)
                    if config.sample_every and done % config.sample_every == 0:
                        self._write_sample_grid(bar)
                    if done % config.checkpoint_every == 0:
                        saved = self.save_checkpoint()
                interrupted = self.step < target
                if window_steps:
                    last_loss = self._log(log, bar, window_loss / window_steps, grad_norm, window_steps,
                                          time.perf_counter() - window_start)
                if self.step != self._saved_step:
                    saved = self.save_checkpoint()
                if config.sample_every and self.step % config.sample_every and not interrupted:
                    self._write_sample_grid(bar)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None
        if log is not None:
            plot_loss_curve(self.run_dir / "log.jsonl", self.run_dir / "loss.png")
        if saved is None and self._saved_step == self.step:  # nothing to do: the checkpoint already there
            saved = self.run_dir / checkpoints.CHECKPOINTS_DIR / checkpoints.step_folder_name(self.step)
        seconds = time.perf_counter() - run_start
        done = self.step - start_step
        return TrainingSummary(self.step, done, seconds, done * config.batch_size / seconds if seconds > 0 else 0.0,
                               last_loss, saved, interrupted)

    @property
    def null_class_label(self) -> Optional[int]:
        """The class label of "no class" (the last embedding) of a class-conditional run with label dropout, else None
        (cond_drop_prob = 0 trains no null class)."""
        return len(self.class_names) if self.class_names is not None and self.config.cond_drop_prob > 0 else None

    def train_step(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One optimisation step on this rank's part of the global batch of step self.step (float [B, C, H, W] in
        [-1, 1], before flips; for a class-conditional run the pair (images, labels int64 [B])): returns (loss,
        gradient norm) as device tensors, without a host sync."""
        config = self.config
        labels = None
        if self.class_names is not None:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError("a class-conditional Trainer's batch is (images, labels)")
            batch, labels = batch
        t_global, flip_global = step_draws(config.seed, self.step, config.batch_size, config.num_train_timesteps)
        part = rank_slice(config.batch_size, self.rank, self.world_size)
        network = self.network
        if labels is not None and self.null_class_label is not None:
            # classifier-free guidance training: each label becomes the null class with cond_drop_prob
            drop = label_drops(config.seed, self.step, config.batch_size, config.cond_drop_prob)[part]
            labels = torch.where(drop, self.null_class_label, labels)
        if labels is not None:
            labels = labels.to(self.device, non_blocking=True)
            network = functools.partial(self.network, class_labels=labels)
        x0 = flip_horizontally(batch, flip_global[part])
        x0 = x0.to(self.device, non_blocking=True).contiguous(memory_format=self._memory_format)
        t = t_global[part].to(self.device, non_blocking=True)
        key = torch.tensor([step_key(config.seed, self.step)], dtype=torch.int64).to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            if config.variance_type == "learned_range":
                loss, _ = hybrid_loss(network, x0, t, self.schedule, seed=key, sample_offset=part.start,
                                      prediction_type=config.prediction_type, vlb_weight=config.vlb_weight)
            else:
                loss = diffusion_loss(network, x0, t, self.schedule, seed=key, sample_offset=part.start,
                                      prediction_type=config.prediction_type, min_snr_gamma=config.min_snr_gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return loss.detach(), grad_norm

    def learning_rate(self, step: int) -> float:
        """AdamW's rate at `step`: linear warm-up over warmup_steps, then constant."""
        config = self.config
        if config.warmup_steps and step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        return config.learning_rate

    def _loader(self, start_step: int):
        from torch.utils.data import DataLoader

        batches = GlobalBatchSampler(len(self.dataset), self.config.batch_size, seed=self.config.seed,
                                     rank=self.rank, world_size=self.world_size, start_step=start_step)
        workers = self.config.num_workers
        dataset = LabelledImages(self.dataset, self._labels) if self._labels is not None else self.dataset
        return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          prefetch_factor=2 if workers else None)

    # ----------------------------------------------------------------------------------------- log and files

    def _log(self, log: Optional[JsonlLog], bar, mean_loss: torch.Tensor, grad_norm, steps: int,
             seconds: float) -> float:
        """Average the window's loss over the ranks (the global batch's loss) and write it on rank 0."""
        if self.world_size > 1:
            mean_loss = mean_loss.clone()
            dist.all_reduce(mean_loss)
            mean_loss /= self.world_size
        loss = float(mean_loss)
        if log is not None:
            record = {"step": self.step, "loss": loss, "lr": self.learning_rate(self.step - 1),
                      "images_per_second": steps * self.config.batch_size / seconds if seconds > 0 else 0.0,
                      "ema_decay": self.ema.decay_at(self.ema.num_updates - 1)}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            log.write(record)
            if self._tensorboard is not None:
                self._tensorboard.write(record)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {self.step}; lower learning_rate or keep "
                                     "grad_clip on (the last good checkpoint is untouched)")
        return loss

    def _progress_bar(self, start: int, target: int):
        if not self.progress or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=target, initial=start, desc="training", unit="step", dynamic_ncols=True)

    def _write_data_grid(self) -> None:
        count = min(self.config.sample_count, len(self.dataset))
        images = torch.stack([self.dataset[i] for i in range(count)])
        save_grid(self.run_dir / "data.png", images)
        if self._tensorboard is not None:
            self._tensorboard.images("data", images, 0)

    def _write_sample_grid(self, bar=None) -> None:
        if self.rank == 0:
            steps = self.config.sample_steps or self.schedule.num_timesteps
            if bar is not None:  # the bar stands still meanwhile: say why
                bar.set_postfix_str(f"drawing {self.config.sample_count} EMA samples x {steps} steps for the grid")
            images = self.sample(self.config.sample_count, seed=self.config.seed,
                                 num_inference_steps=self.config.sample_steps)
            labels = (torch.arange(len(images)) % len(self.class_names)).tolist() if self.class_names else None
            save_grid(self.run_dir / "samples" / f"{checkpoints.step_folder_name(self.step)}.png", images,
                      labels=labels, class_names=self.class_names)  # a class-conditional run: a named row per class
            if self._tensorboard is not None:
                self._tensorboard.images("samples", images, self.step)
        if self.world_size > 1:
            dist.barrier()

    # --------------------------------------------------------------------------------------------- sampling

    @property
    def setup(self):
        """The DiffusionSetup this run trains (stored in every checkpoint; what every loader samples it with)."""
        return DiffusionSetup.from_schedule(self.schedule, prediction_type=self.config.prediction_type,
                                            variance_type=self.config.variance_type,
                                            sample_shape=tuple(self.sample_shape),
                                            num_class_embeds=self.model.config.num_class_embeds,
                                            null_class_label=self.null_class_label,
                                            class_names=self.class_names)

    def sampler(self, **options: Any):
        """A FastSampler of the current EMA weights (options as FastSampler's)."""
        setup = self.setup
        return FastSampler(self.ema.model, self.schedule, self.sample_shape,
                           **{"class_names": setup.class_names, **setup.sampler_options(), **options})

    def sample(self, num_samples: int, seed: int = 0, num_inference_steps: Optional[int] = None) -> torch.Tensor:
        """EMA samples for the periodic grids: one sampler kept (compiled on CUDA only), its weights refreshed. A
        class-conditional run draws sample i of class i mod num_classes (conditional, no guidance)."""
        if self._sampler is None:
            self._sampler = self.sampler(compile=None if self.device.type == "cuda" else False)
        with torch.no_grad():
            for own, ema in zip(self._sampler.model.parameters(), self.ema.model.parameters()):
                own.copy_(ema)  # in place: captured CUDA graphs keep reading these buffers
        labels = None
        if self.class_names is not None:
            labels = torch.arange(num_samples) % len(self.class_names)
        return self._sampler.sample(num_samples, seed=seed, num_inference_steps=num_inference_steps,
                                    class_labels=labels)

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> pathlib.Path:
        """Write a checkpoint of the current step (rank 0; the other ranks wait for it). Returns its folder."""
        folder = self.run_dir / checkpoints.CHECKPOINTS_DIR / checkpoints.step_folder_name(self.step)
        if self.rank == 0:
            tensors, optimizer_meta = checkpoints.optimizer_tensors(self.optimizer)
            state = {"training_config": self.config.to_dict(), "optimizer": optimizer_meta,
                     "ema_num_updates": self.ema.num_updates, "rng": checkpoints.rng_states(),
                     "setup": self.setup.to_dict(),  # β, as numbers, live here (older checkpoints: "schedule")
                     "world_size": self.world_size}
            folder = checkpoints.save_checkpoint(
                self.run_dir, self.step, unet_config=self.model.config.to_dict(), model_state=self.model.state_dict(),
                ema_state=self.ema.state_dict(), optimizer_tensors=tensors, state=state,
                keep=self.config.keep_checkpoints, unusable=self._unusable_steps)
            self._unusable_steps.discard(self.step)  # written again: a good one now
            if (self.run_dir / "log.jsonl").exists():
                plot_loss_curve(self.run_dir / "log.jsonl", self.run_dir / "loss.png")
        if self.world_size > 1:
            dist.barrier()
        self._saved_step = self.step
        return folder

    def _restore(self, checkpoint: checkpoints.Checkpoint) -> None:
        self.model.load_state_dict_checked(checkpoint.model, checkpoint.path / "model.safetensors")
        self.ema.model.load_state_dict_checked(checkpoint.ema, checkpoint.path / "ema.safetensors")
        self.ema.num_updates = int(checkpoint.state["ema_num_updates"])
        self.optimizer.load_state_dict(
            checkpoints.optimizer_state_dict(checkpoint.optimizer, checkpoint.state["optimizer"]))
        checkpoints.restore_rng_states(checkpoint.state.get("rng", {}))
        self.step = self._saved_step = checkpoint.step
        self.resumed_from = checkpoint.path

    # ------------------------------------------------------------------------------------------------ signals

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM set a flag that the loop reads between steps (a step is never cut in half)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self._stop_signalled = True
            self.stop_signal = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check_stop(self, at_log_step: bool) -> None:
        """Stop after this step when signalled. Under torchrun every rank must stop at the same step (a rank that
        left early would hang the others in DDP's all-reduce), so the ranks agree at log steps, where they sync."""
        if self.world_size == 1:
            self._stop = self._stop_signalled
        elif at_log_step:
            flag = torch.tensor([1.0 if self._stop_signalled else 0.0], device=communication_device(self.device))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._stop = bool(flag.item())


def _resumed_config(checkpoint: checkpoints.Checkpoint,
                    config: Union[TrainingConfig, dict, None]) -> TrainingConfig:
    """The checkpoint's config with the caller's changes to RESUMABLE_CHANGES; other differences are an error. A
    dict (or None) gives only the settings to check or change; a TrainingConfig gives all of them."""
    saved = TrainingConfig.from_dict(checkpoint.state["training_config"])
    if config is None or isinstance(config, dict):
        changes = dict(config or {})
        unknown = sorted(set(changes) - set(saved.to_dict()))
        if unknown:
            raise TypeError(f"unknown training settings: {', '.join(unknown)}")
        stored = saved.to_dict()
        # the stored value of each setting not given; the given one where it may change (checked again below)
        given = {**stored, **TrainingConfig.to_dict_of(changes)}
    else:
        given = config.to_dict()
    if _same_data(saved.data, given["data"]):  # ./imgs, imgs and /abs/imgs name one folder
        given["data"] = saved.data if os.path.exists(saved.data) else given["data"]
    differences = [f"{name}: checkpoint {value!r}, given {given[name]!r}" for name, value in saved.to_dict().items()
                   if name not in RESUMABLE_CHANGES and given[name] != value]
    if differences:
        raise ValueError(f"cannot resume {checkpoint.path} with a different setup — " + "; ".join(differences) +
                         " (a resumed run reads its setup from the run folder: leave these settings out)")
    resumable = {name: given[name] for name in RESUMABLE_CHANGES}
    return TrainingConfig.from_dict({**saved.to_dict(), **resumable})


def _absolute_data(data: str) -> str:
    """A data path as an absolute path (the word "shapes" as it is): what a run folder stores."""
    return data if data == "shapes" or not os.path.exists(data) else os.path.abspath(data)


def _same_data(stored: str, given: str) -> bool:
    """Whether a resumed run's given data is its stored data: the same string, the same file or folder, or, where
    the stored path cannot be reached from here (a run begun elsewhere with a relative path), an existing path given
    in its place. The classes are checked against the stored ones after (_check_same_classes)."""
    if stored == given:
        return True
    if "shapes" in (stored, given) or not os.path.exists(given):
        return False
    return os.path.samefile(stored, given) if os.path.exists(stored) else True


def _check_same_classes(checkpoint: checkpoints.Checkpoint, class_names: tuple[str, ...]) -> None:
    """A resumed class-conditional run must see the classes it was trained on, in the same order: a class folder
    added, removed or renamed since would change what each label means (or the size of the class embedding)."""
    stored = (checkpoint.state.get("setup") or {}).get("class_names")
    if stored is not None and tuple(stored) != tuple(class_names):
        raise ValueError(f"cannot resume {checkpoint.path}: the data's classes changed since it was trained — it was "
                         f"trained on {len(stored)} ({', '.join(stored)}), the data now holds {len(class_names)} "
                         f"({', '.join(class_names)}); restore the class folders, or start a new run")


def _process_group() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
