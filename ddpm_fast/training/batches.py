"""Which images, timesteps, flips and noise keys each training step uses: functions of (seed, step) alone.

That is what makes a run reproducible, resumable mid-epoch (a resumed run continues the same sequence) and the same
under torchrun as in one process: the global batch of a step is fixed, and each rank takes a contiguous slice of it.

The epoch order is torch's DistributedSampler shuffle (a permutation seeded by seed + epoch), taken whole with one
replica; DistributedSampler's own split interleaves the ranks (rank r gets every N-th image), which would give a
sample a different position, and so different noise, per world size. A contiguous slice keeps the position.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DistributedSampler, Sampler

_KEY_MULTIPLIER = 0x9E3779B97F4A7C15  # golden-ratio odd constant: spreads (seed, step) over 63 bits
KEY_LIMIT = 2**63


def step_key(seed: int, step: int) -> int:
    """The Philox key of step `step`'s noise, and the seed of its timestep and flip draws."""
    return (seed * _KEY_MULTIPLIER + step + 1) % KEY_LIMIT


def rank_slice(global_batch: int, rank: int, world_size: int) -> slice:
    local = global_batch // world_size
    return slice(rank * local, (rank + 1) * local)


def step_draws(seed: int, step: int, global_batch: int, num_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t int64 [B], flip bool [B]) for the whole global batch of `step`, drawn on the CPU from a generator seeded
    by step_key: every rank draws the same and takes its slice."""
    generator = torch.Generator().manual_seed(step_key(seed, step))
    t = torch.randint(0, num_timesteps, (global_batch,), generator=generator)
    flip = torch.rand(global_batch, generator=generator) < 0.5
    return t, flip


_LABEL_DROP_STREAM = 0x2545F4914F6CDD1D  # keys the label-dropout draws apart from the timestep and flip draws


def label_drops(seed: int, step: int, global_batch: int, probability: float) -> torch.Tensor:
    """bool [B]: which labels of step `step`'s global batch classifier-free-guidance training replaces by the null
    class, each with `probability`; drawn on the CPU from (seed, step) alone, like step_draws."""
    generator = torch.Generator().manual_seed(step_key(seed, step) ^ _LABEL_DROP_STREAM)
    return torch.rand(global_batch, generator=generator) < probability


def flip_horizontally(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W] with sample i mirrored left-right where flip[i]."""
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields, for steps start_step, start_step + 1, ... (forever), this rank's indices of the step's global batch.

    Global batch k of an epoch is images k·B .. (k+1)·B − 1 of the epoch's order; the last partial batch is dropped,
    so every step has exactly B images and steps_per_epoch = len(dataset) // B.
    """

    def __init__(self, dataset_size: int, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world_size}")
        if dataset_size < global_batch:
            raise ValueError(f"the dataset holds {dataset_size} images, fewer than one batch of {global_batch}")
        self.dataset_size = dataset_size
        self.global_batch = global_batch
        self.seed = seed
        self.slice = rank_slice(global_batch, rank, world_size)
        self.start_step = start_step
        self.steps_per_epoch = dataset_size // global_batch

    def epoch_order(self, epoch: int) -> list[int]:
        shuffle = DistributedSampler(range(self.dataset_size), num_replicas=1, rank=0, shuffle=True, seed=self.seed)
        shuffle.set_epoch(epoch)
        return list(shuffle)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch = None
        order: list[int] = []
        while True:
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = self.epoch_order(epoch)
            start = (step % self.steps_per_epoch) * self.global_batch
            yield order[start: start + self.global_batch][self.slice]
            step += 1
