"""Noise schedules: β_t and everything the diffusion steps derive from it.

All quantities are computed in float64 on the CPU once; the steps read them as float32 device buffers, built on
first use per device and cached. Never bf16/fp16: a low-precision ᾱ rounds to 1 near t = 0 and divides by zero.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from .vocabulary import COEFFICIENT_ROWS

# Quantities kept as float32 device buffers (a superset of the kernels' coefficient-table rows).
BUFFER_NAMES = tuple(dict.fromkeys(COEFFICIENT_ROWS + (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "posterior_variance",
)))


class NoiseSchedule:
    """A DDPM noise schedule of T steps, t = 0..T-1 (0-based, as diffusers and improved-diffusion count).

    Every derived quantity is a float64 CPU tensor attribute (`betas`, `alphas_cumprod`, `posterior_variance`, ...);
    `buffers(device)` gives them as float32 tensors on a device and `coefficient_table(device)` packs the rows the
    reverse-step kernels read.
    """

    def __init__(self, betas: Any, name: str = "custom") -> None:
        betas64 = _validated_betas(betas)
        self.name = name
        self.num_timesteps = int(betas64.numel())
        self.betas = betas64
        self.alphas = 1.0 - betas64
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # 1 - ᾱ as a product of its own (not 1 - cumprod), so it keeps full relative precision near t = 0.
        self.one_minus_alphas_cumprod = -torch.expm1(torch.cumsum(torch.log1p(-betas64), dim=0))
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.sqrt()
        self.log_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.log()
        self.sqrt_recip_alphas_cumprod = self.alphas_cumprod.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (self.one_minus_alphas_cumprod / self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas = self.alphas.rsqrt()
        self.eps_coef = betas64 / self.sqrt_one_minus_alphas_cumprod
        one_minus_prev = torch.cat([torch.zeros(1, dtype=torch.float64), self.one_minus_alphas_cumprod[:-1]])
        # β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t); zero at t = 0.
        self.posterior_variance = betas64 * one_minus_prev / self.one_minus_alphas_cumprod
        self.posterior_std = self.posterior_variance.sqrt()
        # log β̃ with β̃_0 (= 0) replaced by β̃_1, as improved-diffusion does; a 1-step chain falls back on β_0.
        first = self.posterior_variance[1] if self.num_timesteps > 1 else betas64[0]
        self.posterior_log_variance_clipped = torch.cat([first.view(1), self.posterior_variance[1:]]).log()
        self.posterior_mean_coef1 = betas64 * self.alphas_cumprod_prev.sqrt() / self.one_minus_alphas_cumprod
        self.posterior_mean_coef2 = one_minus_prev * self.alphas.sqrt() / self.one_minus_alphas_cumprod
        self.sqrt_betas = betas64.sqrt()
        self.log_betas = betas64.log()
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.num_timesteps

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name}, T={self.num_timesteps})"

    # -- constructors -------------------------------------------------------------------------------------------

    @classmethod
    def from_betas(cls, betas: Any, name: str = "custom") -> "NoiseSchedule":
        """Any 1-D sequence, array or tensor of β_t in (0, 1); `name` only labels it (β is never re-derived from it)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        return cls(betas, name=name)

    @classmethod
    def linear(cls, num_timesteps: int, beta_start: Optional[float] = None,
               beta_end: Optional[float] = None) -> "NoiseSchedule":
        """β linear from beta_start to beta_end. Left out, they are Ho et al.'s 1e-4 → 0.02 scaled by 1000/T
        (improved-diffusion's rule, so ᾱ ends near 0 at any T; β_end capped at 0.999): exactly 1e-4 → 0.02 at
        T = 1000. This is the one meaning of "linear" in ddpm_fast — the Trainer, `--schedule linear` and this
        method agree. diffusers' "linear" keeps 1e-4 → 0.02 at every T; `from_diffusers` builds that one from the
        config's own beta_start / beta_end, and every artefact stores β as numbers either way.
        """
        num_timesteps = _validated_num_timesteps(num_timesteps)
        scale = 1000 / num_timesteps
        beta_start = scale * 1e-4 if beta_start is None else beta_start
        beta_end = min(scale * 0.02, 0.999) if beta_end is None else beta_end
        return cls(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64), name="linear")

    @classmethod
    def scaled_linear(
        cls, num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> "NoiseSchedule":
        """sqrt(β) linear (diffusers' "scaled_linear"; the defaults are Stable Diffusion's)."""
        num_timesteps = _validated_num_timesteps(num_timesteps)
        root = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64)
        return cls(root**2, name="scaled_linear")

    @classmethod
    def cosine(cls, num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule: ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), β capped at max_beta."""
        num_timesteps = _validated_num_timesteps(num_timesteps)
        for name, value, upper in (("s", s, math.inf), ("max_beta", max_beta, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < upper:
                raise ValueError(f"{name} must be a number in (0, {upper}), got {value!r}")
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    @classmethod
    def sigmoid(cls, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """β = sigmoid(linspace(-6, 6)) rescaled to [beta_start, beta_end] (diffusers' "sigmoid")."""
        num_timesteps = _validated_num_timesteps(num_timesteps)
        ramp = torch.sigmoid(torch.linspace(-6, 6, num_timesteps, dtype=torch.float64))
        return cls(ramp * (beta_end - beta_start) + beta_start, name="sigmoid")

    @classmethod
    def from_diffusers(cls, scheduler_or_config: Any) -> "NoiseSchedule":
        """The schedule of a diffusers DDPMScheduler (or DDIMScheduler), or of its config dict.

        β is built exactly as diffusers builds it (float32 where diffusers uses float32), then derived in float64.
        """
        config = getattr(scheduler_or_config, "config", scheduler_or_config)
        if not isinstance(config, Mapping):
            raise TypeError(
                "scheduler_or_config must be a diffusers scheduler or its config dict, "
                f"got {type(scheduler_or_config).__name__}"
            )
        if config.get("rescale_betas_zero_snr", False):
            raise ValueError("scheduler config: rescale_betas_zero_snr=True (ᾱ_T = 0) is not supported")
        num_timesteps = _validated_num_timesteps(config.get("num_train_timesteps", 1000))
        trained = config.get("trained_betas")
        if trained is not None:
            return cls(torch.as_tensor(np.asarray(trained, dtype=np.float32)), name="trained_betas")
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        kind = config.get("beta_schedule", "linear")
        if kind == "linear":
            betas = torch.linspace(start, end, num_timesteps, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, num_timesteps, dtype=torch.float32) ** 2
        elif kind == "squaredcos_cap_v2":
            return cls(cls.cosine(num_timesteps).betas.float(), name="cosine")
        elif kind == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6, 6, num_timesteps)) * (end - start) + start
        else:
            raise ValueError(
                f"scheduler config: beta_schedule {kind!r} is not supported; expected one of "
                "'linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid' or trained_betas"
            )
        return cls(betas, name=kind)

    # -- device buffers -----------------------------------------------------------------------------------------

    def buffers(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """float32 copies of the schedule's quantities (BUFFER_NAMES and "coefficient_table") on `device`, cached,
        plus "alphas_cumprod_float64" for the DDIM step.

        The first call per device copies host to device; later calls (a sampling loop) copy nothing.
        """
        try:
            device = torch.device(device if device is not None else "cpu")
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be cpu, cuda, cuda:N or a torch.device, got {device!r}") from None
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        cached = self._device_cache.get(device)
        if cached is None:
            cached = {name: getattr(self, name).to(device=device, dtype=torch.float32) for name in BUFFER_NAMES}
            cached["coefficient_table"] = torch.stack([cached[name] for name in COEFFICIENT_ROWS]).contiguous()
            # DDIM's per-sample scalars need ᾱ in float64 (see kernels/reverse_step.py); it is only T values.
            cached["alphas_cumprod_float64"] = self.alphas_cumprod.to(device)
            self._device_cache[device] = cached
        return cached

    def coefficient_table(self, device: torch.device | str | None = None) -> torch.Tensor:
        """float32 [len(COEFFICIENT_ROWS), T] table read by the reverse-step kernels."""
        return self.buffers(device)["coefficient_table"]


def _validated_num_timesteps(num_timesteps: Any) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
        raise TypeError(f"num_timesteps must be an int, got {type(num_timesteps).__name__}")
    if num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    return int(num_timesteps)


def _validated_betas(betas: Any) -> torch.Tensor:
    if isinstance(betas, torch.Tensor):
        values = betas.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(betas, (Sequence, np.ndarray)) and not isinstance(betas, (str, bytes)):
        values = torch.as_tensor(np.asarray(betas, dtype=np.float64))
    else:
        raise TypeError(f"betas must be a 1-D tensor, array or sequence of floats, got {type(betas).__name__}")
    if values.dim() != 1:
        raise ValueError(f"betas must be 1-D, got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError("betas must hold at least one value (T > 0)")
    if not torch.isfinite(values).all():
        raise ValueError("betas contains NaN or infinite values")
    if (values <= 0).any() or (values >= 1).any():
        bad = values[(values <= 0) | (values >= 1)][0].item()
        raise ValueError(f"betas must lie strictly between 0 and 1, found {bad}")
    return values.clone()
