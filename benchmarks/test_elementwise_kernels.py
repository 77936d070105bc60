"""q-sample and the reverse step: naive eager (the seed's ops) vs torch.compile of the same math vs our kernel.

Each case checks the fast output against the naive one, then times all three and the copy rate in the same run and
records GB/s, the fraction of the copy rate and the ratios in the benchmark's extra_info (see report.py).
Run: pytest benchmarks/ --benchmark-json=results.json   (CI: --benchmark-disable, one small size each).
"""

from __future__ import annotations

import pytest
import torch

import ddpm_fast as df
import ddpm_fast.kernels.ops  # registers torch.ops.ddpm_fast.*, which the cases call directly
from ddpm_fast import reference
from timing import Rotating, kernel_figures, kernel_times

CIFAR = (3, 32, 32)
# CIFAR-sized batches, then a ≥ 256 MB case on a GPU (67M float32 elements per tensor).
GPU_SHAPES = [(1, *CIFAR), (16, *CIFAR), (128, *CIFAR), (512, *CIFAR), (1024, 4, 128, 128)]
CPU_SHAPES = [(1, *CIFAR), (16, *CIFAR), (128, *CIFAR), (64, 4, 64, 64)]
T = 1000
SCHEDULE = df.NoiseSchedule.linear(T)
TERMS = reference.schedule_terms(reference.linear_beta_schedule(T))


def benchmark_shapes():
    """The sizes this device runs (conftest parametrizes `shape` with them; smoke mode keeps the first)."""
    return GPU_SHAPES if torch.cuda.is_available() else CPU_SHAPES


def quick_shapes():
    """`ddpm-fast bench --quick`: one CIFAR batch (128 images on a GPU, 16 on a CPU)."""
    return [(128 if torch.cuda.is_available() else 16, *CIFAR)]


def _naive_q_sample(x0, t, noise, sqrt_ac, sqrt_1m_ac):
    # The seed's forward_diffusion_sample with its noise passed in: gather, reshape, mul, mul, add.
    return (reference.get_index_from_list(sqrt_ac, t, x0.shape) * x0
            + reference.get_index_from_list(sqrt_1m_ac, t, x0.shape) * noise)


def _naive_q_sample_drawing(x0, t, sqrt_ac, sqrt_1m_ac):
    noise = torch.randn_like(x0)
    return _naive_q_sample(x0, t, noise, sqrt_ac, sqrt_1m_ac), noise


def _naive_p_step(eps, t, x, noise, betas, sqrt_recip_alphas, sqrt_1m_ac, posterior_variance):
    # The seed's sample_timestep with the model output and noise passed in (t > 0 for every sample).
    betas_t = reference.get_index_from_list(betas, t, x.shape)
    sqrt_1m_ac_t = reference.get_index_from_list(sqrt_1m_ac, t, x.shape)
    sqrt_recip_alphas_t = reference.get_index_from_list(sqrt_recip_alphas, t, x.shape)
    mean = sqrt_recip_alphas_t * (x - betas_t * eps / sqrt_1m_ac_t)
    return mean + torch.sqrt(reference.get_index_from_list(posterior_variance, t, x.shape)) * noise


def _naive_p_step_drawing(eps, t, x, betas, sqrt_recip_alphas, sqrt_1m_ac, posterior_variance):
    return _naive_p_step(eps, t, x, torch.randn_like(x), betas, sqrt_recip_alphas, sqrt_1m_ac, posterior_variance)


_COMPILED = {}


def _compiled(fn):
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


def _run_case(benchmark, device, smoke, quick, shape, tensors_per_call, make_inputs, naive, fast, check):
    numel = 1
    for size in shape:
        numel *= size
    bytes_per_call = tensors_per_call * numel * 4
    rotating = Rotating(make_inputs, bytes_per_call, cap=1 if smoke else 16)
    check(*rotating.sets[0])
    compiled = _compiled(naive)
    times, copy_rate = kernel_times({
        "naive_eager": lambda: naive(*rotating.next()),
        "torch_compile": lambda: compiled(*rotating.next()),
        "ddpm_fast": lambda: fast(*rotating.next()),
    }, numel * 4, device, smoke)
    benchmark.extra_info.update(kernel_figures(shape, "float32", bytes_per_call, times, copy_rate))

    def timed_fast():
        fast(*rotating.next())
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed_fast, rounds=1 if smoke else (5 if quick else 20), warmup_rounds=0 if smoke else 3)


@pytest.mark.parametrize("noise", ["given", "drawn"])
def test_q_sample(benchmark, device, smoke, quick, shape, noise):
    benchmark.group = f"q_sample ({noise} noise)"
    buffers = SCHEDULE.buffers(device)
    sqrt_ac, sqrt_1m_ac = buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"]
    seed = torch.tensor([0], device=device)

    def make():
        x0 = torch.randn(shape, device=device)
        t = torch.randint(0, T, (shape[0],), device=device)
        return (x0, t, torch.randn_like(x0)) if noise == "given" else (x0, t)

    if noise == "given":
        def naive(x0, t, eps):
            return _naive_q_sample(x0, t, eps, sqrt_ac, sqrt_1m_ac)

        def fast(x0, t, eps):
            return torch.ops.ddpm_fast.q_sample(x0, t, sqrt_ac, sqrt_1m_ac, eps)

        def check(x0, t, eps):
            torch.testing.assert_close(fast(x0, t, eps), naive(x0, t, eps), rtol=1e-5, atol=1e-5)
    else:
        def naive(x0, t):
            return _naive_q_sample_drawing(x0, t, sqrt_ac, sqrt_1m_ac)

        def fast(x0, t):
            return torch.ops.ddpm_fast.q_sample_philox(x0, t, sqrt_ac, sqrt_1m_ac, seed, 0)

        def check(x0, t):
            x_t, eps = fast(x0, t)  # the drawn ε differs from torch's; the q-sample identity must hold
            torch.testing.assert_close(x_t, _naive_q_sample(x0, t, eps, sqrt_ac, sqrt_1m_ac), rtol=1e-5, atol=1e-5)

    # given: read x0 and ε, write x_t; drawn: read x0, write x_t and ε.
    _run_case(benchmark, device, smoke, quick, shape, 3, make, naive, fast, check)


@pytest.mark.parametrize("noise", ["given", "drawn"])
def test_p_step(benchmark, device, smoke, quick, shape, noise):
    benchmark.group = f"p_step ({noise} noise)"
    table = SCHEDULE.coefficient_table(device)
    terms = tuple(TERMS[k].to(device) for k in
                  ("betas", "sqrt_recip_alphas", "sqrt_one_minus_alphas_cumprod", "posterior_variance"))
    seed = torch.tensor([0], device=device)

    def make():
        x = torch.randn(shape, device=device)
        t = torch.randint(1, T, (shape[0],), device=device)
        eps = torch.randn_like(x)
        return (eps, t, x, torch.randn_like(x)) if noise == "given" else (eps, t, x)

    if noise == "given":
        def naive(eps, t, x, z):
            return _naive_p_step(eps, t, x, z, *terms)

        def fast(eps, t, x, z):
            return torch.ops.ddpm_fast.p_step(eps, t, x, table, z, None, 0, 0, 0, False, 1.0)

        def check(eps, t, x, z):
            torch.testing.assert_close(fast(eps, t, x, z), naive(eps, t, x, z), rtol=1e-4, atol=1e-4)
    else:
        def naive(eps, t, x):
            return _naive_p_step_drawing(eps, t, x, *terms)

        def fast(eps, t, x):
            return torch.ops.ddpm_fast.p_step(eps, t, x, table, None, seed, 0, 0, 0, False, 1.0)

        def check(eps, t, x):
            mean = torch.ops.ddpm_fast.p_step(eps, t, x, table, None, None, 0, 0, 0, False, 1.0)
            naive_mean = _naive_p_step(eps, t, x, torch.zeros_like(x), *terms)
            torch.testing.assert_close(mean, naive_mean, rtol=1e-4, atol=1e-4)
            assert torch.isfinite(fast(eps, t, x)).all()

    # given: read x_t, ε_θ and z, write x_{t-1}; drawn: read x_t and ε_θ, write x_{t-1}.
    _run_case(benchmark, device, smoke, quick, shape, 4 if noise == "given" else 3, make, naive, fast, check)
