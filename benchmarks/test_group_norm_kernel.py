"""The fused GroupNorm (+ time-embedding add + SiLU) vs the eager sequence and vs torch.compile of that sequence.

bf16, channels-last, at the norm shapes of ddpm-cifar10 (128 channels at 32², 256 at 16² and 8²; 32 groups), the
ResnetBlock's second norm: y = SiLU(GroupNorm(x + emb)). Forward alone, and forward + backward (all gradients).
GB/s counts the bytes a call must move — forward: read x, write y; backward: read x and dy, write dx — over the
device-to-device copy rate measured in the same run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddpm_fast.kernels.group_norm import group_norm_act_op
from timing import Rotating, kernel_figures, kernel_times

GROUPS = 32
EPS = 1e-6
CIFAR_NORMS = [(128, 32), (256, 16), (256, 8)]  # (channels, resolution)
GPU_SHAPES = [(batch, c, r, r) for batch in (1, 16, 128, 512) for c, r in CIFAR_NORMS]
CPU_SHAPES = [(1, 128, 32, 32), (16, 128, 32, 32)]
DTYPE = torch.bfloat16


def benchmark_shapes():
    return GPU_SHAPES if torch.cuda.is_available() else CPU_SHAPES


def quick_shapes():
    """`ddpm-fast bench --quick`: ddpm-cifar10's first norm shape, batch 128 on a GPU, 1 on a CPU."""
    return [(128, 128, 32, 32)] if torch.cuda.is_available() else CPU_SHAPES[:1]


def eager_sequence(x, emb, weight, bias):
    # What a U-Net written op by op runs: add, GroupNorm, SiLU (three kernels, three round trips to memory).
    return F.silu(F.group_norm(x + emb[:, :, None, None], GROUPS, weight, bias, EPS))


def fused(x, emb, weight, bias):
    return group_norm_act_op(x, emb, weight, bias, None, None, GROUPS, EPS, True)[0]


_COMPILED = {}


def compiled_sequence(*args):
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(eager_sequence)
    return _COMPILED["fn"](*args)


def with_backward(fn):
    def run(x, emb, weight, bias, dy):
        y = fn(x, emb, weight, bias)
        return torch.autograd.grad(y, (x, emb, weight, bias), dy)
    return run


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
def test_group_norm_silu(benchmark, device, smoke, quick, shape, passes):
    benchmark.group = f"group_norm+emb+silu {passes} (bf16 channels-last)"
    numel = shape[0] * shape[1] * shape[2] * shape[3]
    tensors_moved = 2 if passes == "forward" else 5
    bytes_per_call = tensors_moved * numel * DTYPE.itemsize
    backward = passes == "forward_backward"

    def make():
        x = torch.randn(shape, device=device, dtype=DTYPE).contiguous(memory_format=torch.channels_last)
        emb = torch.randn(shape[:2], device=device, dtype=DTYPE)
        weight = 1 + 0.1 * torch.randn(shape[1], device=device, dtype=DTYPE)
        bias = 0.1 * torch.randn(shape[1], device=device, dtype=DTYPE)
        tensors = [x, emb, weight, bias]
        if backward:
            tensors = [t.requires_grad_() for t in tensors] + [torch.randn_like(x)]
        return tuple(tensors)

    methods = {"naive_eager": eager_sequence, "torch_compile": compiled_sequence, "ddpm_fast": fused}
    if backward:
        methods = {name: with_backward(fn) for name, fn in methods.items()}
    rotating = Rotating(make, bytes_per_call, cap=1 if smoke else 16)

    first = rotating.sets[0]
    expected, actual = methods["naive_eager"](*first), methods["ddpm_fast"](*first)
    for e, a in zip(expected if backward else [expected], actual if backward else [actual]):
        scale = e.float().abs().max().item()
        torch.testing.assert_close(a.float(), e.float(), rtol=3e-2, atol=3e-2 * max(scale, 1.0))

    times, copy_rate = kernel_times({name: lambda fn=fn: fn(*rotating.next()) for name, fn in methods.items()},
                                    numel * DTYPE.itemsize, device, smoke)
    benchmark.extra_info.update(kernel_figures(shape, "bfloat16", bytes_per_call, times, copy_rate))
    benchmark.extra_info["memory_format"] = "channels_last"

    def timed():
        methods["ddpm_fast"](*rotating.next())
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=1 if smoke else (5 if quick else 20), warmup_rounds=0 if smoke else 3)
