"""Training-step throughput: the seed's naive train step beside ours (Trainer.train_step) and the peers, one run.

Methods, same initial weights, one optimisation step each (forward, backward, AdamW):
  naive_fp32_eager         the seed's train_step (reference.py): fp32, NCHW, eager, torch.randn noise.
  naive_compiled           the same step with the model under torch.compile (fp32).
  diffusers_fp32_eager     diffusers' UNet2DModel with the same weights, the seed's objective.
  diffusers_bf16_compile   the same in bf16 autocast, channels-last, compiled (GPU only: the usual fast recipe).
  ddpm_fast                Trainer.train_step with the device's defaults: bf16 autocast, channels-last, torch.compile
                           and fused kernels on a GPU (fp32 eager channels-last on a CPU), plus what the naive step
                           leaves out: in-kernel q-sample noise, gradient clipping and the EMA update.
  ddpm_fast_compiled       (CPU, full mode) ours with torch.compile.
Images/s, and the training FLOP rate (3 × one forward's FLOPs per image) over the bf16 matmul rate measured in the same
session. Before timing, each method's loss on one batch is checked against the fp32 reference's on the same noise.
GPU: ddpm-cifar10 at 32x32, batch 32 and 128 (the issue's case). CPU: the tiny preset, batch 8 and 32 (quick: 8).
Smoke (CI, the interpreter): tiny at 16x16, eager methods once, whole-model steps on the torch references
(`cpu_reference`: the interpreter would run every norm program one at a time; tests prove the kernels).
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch

from ddpm_fast import reference
from ddpm_fast.kernels import cpu_reference, launch
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.trainer import Trainer
from models import diffusers_unet, gflop_per_image
from timing import compare_seconds

LOSS_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}  # relative, against the fp32 reference's loss on the same noise
TRAINING_FLOPS_PER_FORWARD = 3  # forward + backward (two matmuls per forward one)


def benchmark_shapes():
    if torch.cuda.is_available():
        return [(32, 3, 32, 32), (128, 3, 32, 32)]
    return [(8, 3, 32, 32), (32, 3, 32, 32)]


def quick_shapes():
    return [(128 if torch.cuda.is_available() else 8, 3, 32, 32)]


def _preset(device: torch.device, smoke: bool) -> str:
    return "ddpm-cifar10" if device.type == "cuda" and not smoke else "tiny"


class _Images(list):
    channels = 3


def _trainer(preset: str, size: int, batch: int, run_dir, device, **options) -> Trainer:
    config = TrainingConfig(model=preset, image_size=size, batch_size=batch, warmup_steps=0, **options)
    images = _Images(torch.zeros(3, size, size) for _ in range(batch))
    return Trainer(config, run_dir, dataset=images, device=device, progress=False)


def _seed_step(model, optimizer, schedule_rows, x0, t):
    loss = reference.train_step(model, x0, t, *schedule_rows)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def test_training_step(benchmark, shape, device, smoke, quick, bf16_matmul_tflops, tmp_path):
    with cpu_reference() if launch.TRITON_INTERPRETED else contextlib.nullcontext():
        _measure(benchmark, shape, device, smoke, quick, bf16_matmul_tflops, tmp_path)


def _measure(benchmark, shape, device, smoke, quick, bf16_matmul_tflops, tmp_path):
    batch = shape[0]
    size = 16 if smoke else shape[-1]
    preset = _preset(device, smoke)
    torch.manual_seed(0)
    x0 = torch.rand(batch, 3, size, size, device=device) * 2 - 1

    ours = _trainer(preset, size, batch, tmp_path / "ours", device)
    reference_trainer = _trainer(preset, size, batch, tmp_path / "reference", device, dtype="float32",
                                 compile=False, channels_last=False)
    ours_dtype = "bf16" if ours.autocast_dtype == torch.bfloat16 else "fp32"
    expected = float(reference_trainer.train_step(x0)[0])
    start = time.perf_counter()
    got = float(ours.train_step(x0)[0])
    ours_setup = time.perf_counter() - start
    assert abs(got - expected) <= LOSS_TOLERANCE[ours_dtype] * abs(expected), (got, expected)

    seed_model = copy.deepcopy(reference_trainer.model).to(memory_format=torch.contiguous_format)
    terms = reference.schedule_terms(reference_trainer.schedule.betas.to(device=device, dtype=torch.float32))
    rows = (terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"])
    T = reference_trainer.schedule.num_timesteps

    def seed_method(model, dtype=None, channels_last=False):
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        images = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0

        def step():
            t = torch.randint(0, T, (batch,), device=device)
            with autocast:
                return _seed_step(model, optimizer, rows, images, t)
        return step

    def checked(step, name, tolerance):
        """The method's first step (its setup: compiling) against the seed's loss on the same noise and timesteps."""
        torch.manual_seed(1)
        start = time.perf_counter()
        loss = float(step().detach())
        setup[name] = time.perf_counter() - start
        torch.manual_seed(1)
        naive = float(reference.train_step(seed_model, x0, torch.randint(0, T, (batch,), device=device), *rows))
        assert abs(loss - naive) <= tolerance * abs(naive) + 1e-3, (name, loss, naive)
        return step

    methods = {"naive_fp32_eager": seed_method(copy.deepcopy(seed_model))}
    setup: dict = {"ddpm_fast": ours_setup}
    unavailable: dict = {}
    if not smoke:
        methods["naive_compiled"] = checked(seed_method(torch.compile(copy.deepcopy(seed_model))), "naive_compiled",
                                            LOSS_TOLERANCE["fp32"])
    try:
        theirs = diffusers_unet(seed_model, device, torch.float32).train().requires_grad_(True)
    except ImportError as error:
        unavailable["diffusers"] = f"unavailable: {error}"
    else:
        methods["diffusers_fp32_eager"] = checked(_diffusers_method(seed_method, theirs), "diffusers_fp32_eager",
                                                  LOSS_TOLERANCE["fp32"])
        if device.type == "cuda" and not smoke:
            fast_theirs = copy.deepcopy(theirs).to(memory_format=torch.channels_last)
            methods["diffusers_bf16_compile"] = checked(
                _diffusers_method(seed_method, torch.compile(fast_theirs), dtype=torch.bfloat16, channels_last=True),
                "diffusers_bf16_compile", LOSS_TOLERANCE["bf16"])
    methods["ddpm_fast"] = lambda: ours.train_step(x0)
    if device.type == "cpu" and not smoke and not quick:
        compiled = _trainer(preset, size, batch, tmp_path / "compiled", device, compile=True)
        start = time.perf_counter()
        compiled.train_step(x0)
        setup["ddpm_fast_compiled"] = time.perf_counter() - start
        methods["ddpm_fast_compiled"] = lambda: compiled.train_step(x0)

    seconds = compare_seconds(methods, device, smoke)
    benchmark.pedantic(methods["ddpm_fast"], rounds=1, iterations=1)
    images_per_second = {name: batch / value for name, value in seconds.items()}
    fastest_ours = max((n for n in images_per_second if n.startswith("ddpm_fast")), key=images_per_second.get)
    peers = {n: v for n, v in images_per_second.items() if not n.startswith("ddpm_fast") and n != "naive_fp32_eager"}
    best_peer = max(peers, key=peers.get) if peers else "naive_fp32_eager"
    forward_gflop, counted = gflop_per_image(seed_model.cpu(), preset, (3, size, size))
    seed_model.to(device)
    gflop = TRAINING_FLOPS_PER_FORWARD * forward_gflop
    achieved = images_per_second[fastest_ours] * gflop / 1e3
    benchmark.extra_info.update({
        "kind": "training_step", "preset": preset, "batch": batch, "image_size": size, "dtype": ours_dtype,
        "device": str(device), "images_per_second": images_per_second,
        "speedup_vs_naive": images_per_second[fastest_ours] / images_per_second["naive_fp32_eager"],
        "speedup_vs_best_peer": images_per_second[fastest_ours] / images_per_second[best_peer],
        "best_peer": best_peer, "ours": fastest_ours, "gflop_per_image": gflop,
        "counted_forward_gflop_per_image": counted, "achieved_tflops": achieved,
        "matmul_tflops": bf16_matmul_tflops, "fraction_of_matmul_rate": achieved / bf16_matmul_tflops,
        "setup_seconds": setup, "unavailable": unavailable,
        "ours_options": {"dtype": ours_dtype, "channels_last": ours.channels_last, "compiled": ours.compiled},
    })
    assert all(v > 0 for v in images_per_second.values())


def _diffusers_method(seed_method, model, dtype=None, channels_last=False):
    class Sample(torch.nn.Module):  # diffusers returns an object with .sample; the seed's step wants the tensor
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            return self.inner(x, t).sample

    return seed_method(Sample(model), dtype=dtype, channels_last=channels_last)
