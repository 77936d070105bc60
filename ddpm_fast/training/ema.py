"""Exponential moving average of a model's weights, the weights DDPMs sample with.

The pitfall: with decay 0.9999 from step 0, the average is still ~(1 − 0.9999^n) of the way from the random
initial weights after n steps (37% at 10k steps), so early samples from the EMA are noise. With warm-up the decay
is min(decay, (1 + n) / (10 + n)) at update n: a short memory at first, the full decay later.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A float32 shadow copy of `model` (the same class, requires_grad off) updated by `update(model)`."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        if not isinstance(warmup, bool):
            raise TypeError(f"warmup must be True or False, got {warmup!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).float().eval()
        self.model.requires_grad_(False)

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow ← decay·shadow + (1 − decay)·weights, for every parameter; buffers are copied."""
        weight = 1.0 - self.decay_at(self.num_updates)
        shadow = list(self.model.parameters())
        live = [p.detach().float() for p in model.parameters()]
        if len(shadow) != len(live):
            raise ValueError(f"model has {len(live)} parameters; the EMA was built from one with {len(shadow)}")
        torch._foreach_lerp_(shadow, live, weight)
        for own, other in zip(self.model.buffers(), model.buffers()):
            own.copy_(other)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)
