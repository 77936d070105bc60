"""Quality against time: how few model calls each sampling method needs to match full DDPM, on a trained model.

The model is the demo's: trained here with the demo's plan for the device (CPU: the tiny U-Net, 1200 steps at 16×16,
T = 250, v-prediction; GPU: 4000 steps at 32×32, T = 1000), or read from DDPM_FAST_QUALITY_CHECKPOINT (any folder
FastSampler.from_pretrained reads). For each method — DDPM over all T steps, respaced DDPM at 100 / 50, DDIM at
50 / 20 / 10, DPM-Solver++ 2M at 25 / 15 / 10 / 8 / 6 and its SDE variant at 25 / 15 / 10, DPM-Solver++ 3M and UniPC
(bh2) of orders 2 and 3 at 10 / 8 / 6 / 5 — FastSampler draws n = 256 samples with each of a few seeds; each set is timed (sampling seconds, setup apart) and scored by ddpm_fast.evaluation.metrics.quality_report
against held-out shapes: rf_kid (the headline) and pixel_sw, beside their real-vs-real floor and noise ceiling.

The noise band is full DDPM's own spread over the seeds: a method is "within the band" when its mean rf_kid is no
worse than full DDPM's worst seed. The headline per method is the fewest model calls at which it is within the band,
and its speed-up over full DDPM at that point (seconds / seconds). quality_vs_time.png plots rf_kid against seconds.

Modes: full (3 seeds), quick (`--quick`: the demo's plan at half its training steps, n = 64 samples, 2 seeds — the
group's smallest size, about 2 minutes of a quiet 2-core CPU where full mode takes 7: noisier figures, the same
cases, eager steps), smoke (CI: 4 training steps at T = 20, 8 samples, 1 seed, a few short chains — it proves the group runs,
not the figures).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile

import torch

import ddpm_fast as df
from ddpm_fast.cli.demo import CPU_PLAN, GPU_PLAN
from ddpm_fast.data.datasets import ShapesDataset
from ddpm_fast.evaluation.metrics import quality_report
from ddpm_fast.kernels import cpu_reference, launch
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.trainer import Trainer

CHECKPOINT_ENV = "DDPM_FAST_QUALITY_CHECKPOINT"
NUM_SAMPLES = {"full": 256, "quick": 64, "smoke": 8}
QUICK_TRAINING_FRACTION = 0.5  # quick mode trains the demo's plan for half its steps (the CPU plan: 600)
SMOKE_TIMESTEPS = 20  # smoke mode's T: full DDPM stays a short chain
HELD_OUT = 1024
SEEDS = {"full": 3, "quick": 2, "smoke": 1}
# (method, num_inference_steps, sampler options); None: every training timestep. A multistep solver at another
# order runs on a sampler of that order (the same model).
THIRD_ORDER = {"solver_order": 3}
CASES = [("ddpm", None, {}), ("ddpm", 100, {}), ("ddpm", 50, {}), ("ddim", 50, {}), ("ddim", 20, {}), ("ddim", 10, {}),
         *(("dpm_solver++", steps, {}) for steps in (25, 15, 10, 8, 6)),
         *(("sde_dpm_solver++", steps, {}) for steps in (25, 15, 10)),
         *(("dpm_solver++", steps, THIRD_ORDER) for steps in (10, 8, 6, 5)),
         *(("unipc", steps, {}) for steps in (10, 8, 6, 5)),
         *(("unipc", steps, THIRD_ORDER) for steps in (10, 8, 6, 5))]
SMOKE_CASES = [("ddpm", None, {}), ("ddim", 3, {}), ("dpm_solver++", 3, {}), ("sde_dpm_solver++", 3, {}),
               ("unipc", 3, THIRD_ORDER)]
CPU_GOAL = ("dpm_solver++", 25, 10.0)  # DPM-Solver++ at <= 25 steps within the band at >= 10x less sampling time
FEWEST_CALLS_GOAL = 8  # some method within the band at <= 8 model calls (10 with DPM-Solver++ 2M alone)


def solver_label(method: str, options: dict) -> str:
    """The name a method's line carries: "unipc", "unipc order 3", "dpm_solver++ order 3"."""
    return method + (f" order {options['solver_order']}" if "solver_order" in options else "")


def _trained_samplers(device: torch.device, smoke: bool, quick: bool = False):
    """(a function of FastSampler options giving a sampler of the EMA weights, what was trained or read)."""
    path = os.environ.get(CHECKPOINT_ENV)
    if path:  # an order other than the stored one overrides it for that sampler
        return (lambda **options: df.FastSampler.from_pretrained(path, device=device, override_setup=bool(options),
                                                                 **options)), f"read from {path}"
    plan = GPU_PLAN if device.type == "cuda" else CPU_PLAN
    steps = 4 if smoke else (int(plan.steps * QUICK_TRAINING_FRACTION) if quick else plan.steps)
    config = TrainingConfig(data="shapes", image_size=plan.image_size, steps=steps, batch_size=plan.batch_size,
                            num_train_timesteps=SMOKE_TIMESTEPS if smoke else plan.timesteps,
                            learning_rate=plan.learning_rate,
                            warmup_steps=min(plan.warmup_steps, steps), checkpoint_every=steps, log_every=steps,
                            prediction_type=plan.prediction_type, min_snr_gamma=plan.min_snr_gamma)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, device=device, progress=False)
        summary = trainer.train()
        # quick: eager steps; left to default, each (method, batch size) of the group decides and may compile on
        # its own, minutes apiece on a busy CPU
        compile = False if smoke or quick else None
    plan_name = "GPU" if device.type == "cuda" else "CPU"
    return ((lambda **options: trainer.sampler(compile=compile, **options)),
            f"trained here: the demo's {plan_name} plan, {steps} steps in {summary.seconds:.1f} s")


def test_quality(benchmark, device, smoke, quick):
    mode = "smoke" if smoke else ("quick" if quick else "full")

    def guard():  # whole-model runs take the torch references on CPU tensors even under the interpreter
        return cpu_reference() if launch.TRITON_INTERPRETED else contextlib.nullcontext()

    load_before = os.getloadavg()
    with guard():
        make_sampler, provenance = _trained_samplers(device, smoke, quick)
        samplers = {(): make_sampler()}
        sampler = samplers[()]
        size = sampler.sample_shape[1]
        total = sampler.schedule.num_timesteps
        benchmark.group = f"quality (tiny, {size}x{size}, T={total})"
        held = ShapesDataset.held_out(HELD_OUT, size).images.float().div_(127.5).sub_(1.0)
        n = NUM_SAMPLES[mode]
        cases = SMOKE_CASES if smoke else CASES
        seeds = range(SEEDS[mode])
        results: dict[str, dict] = {}
        for method, steps, options in cases:
            key = tuple(sorted(options.items()))
            if key not in samplers:
                samplers[key] = make_sampler(**options)
            sampler = samplers[key]
            label = solver_label(method, options)
            name = f"{label} {steps or total}"
            if not smoke:  # warm-up (and compile): sampling_seconds leaves setup out, but first calls run cold
                sampler.sample(min(n, 8), seed=99, method=method, num_inference_steps=steps)
            runs = []
            for seed in seeds:
                images = sampler.sample(n, seed=seed, method=method, num_inference_steps=steps)
                seconds = sampler.last_report.sampling_seconds
                report = quality_report(images.cpu(), held, seed=seed)
                runs.append({"seed": seed, "seconds": seconds, "figures": report.figures,
                             "fell_back": list(sampler.last_report.fallbacks)})
            rf = [run["figures"]["samples"]["rf_kid"] for run in runs]
            results[name] = {
                "method": label, "model_calls": steps or total, "runs": runs,
                "seconds": statistics.median(run["seconds"] for run in runs),
                "rf_kid": statistics.fmean(rf), "rf_kid_spread": [min(rf), max(rf)],
                "pixel_sw": statistics.fmean(run["figures"]["samples"]["pixel_sw"] for run in runs),
                "floor": {figure: statistics.fmean(run["figures"]["real"][figure] for run in runs)
                          for figure in ("rf_kid", "pixel_sw")},
                "ceiling": {figure: statistics.fmean(run["figures"]["noise"][figure] for run in runs)
                            for figure in ("rf_kid", "pixel_sw")},
            }
    full = results[f"ddpm {total}"]
    band = full["rf_kid_spread"]
    headline = {}
    for name, info in results.items():
        info["within_band"] = info["rf_kid"] <= band[1]
        info["speedup_vs_full_ddpm"] = full["seconds"] / info["seconds"] if info["seconds"] > 0 else float("nan")
        best = headline.get(info["method"])
        if info["within_band"] and (best is None or info["model_calls"] < results[best]["model_calls"]):
            headline[info["method"]] = name
    goals = {}
    if device.type == "cpu" and not smoke:
        method, most_steps, factor = CPU_GOAL
        hits = [info for info in results.values() if info["method"] == method and info["model_calls"] <= most_steps
                and info["within_band"] and info["speedup_vs_full_ddpm"] >= factor]
        goals[f"{method} at <= {most_steps} steps within the band at >= {factor:g}x less time"] = bool(hits)
    if not smoke:
        goals[f"a method within the band at <= {FEWEST_CALLS_GOAL} model calls"] = any(
            info["within_band"] and info["model_calls"] <= FEWEST_CALLS_GOAL for info in results.values())
    fell_back = {name: "; ".join(reasons) for name, info in results.items()
                 for reasons in [sorted({r for run in info["runs"] for r in run["fell_back"]})] if reasons}
    benchmark.extra_info.update({
        "kind": "quality", "preset": "tiny", "sample_shape": list(sampler.sample_shape), "num_timesteps": total,
        "num_samples": n, "seeds": len(seeds), "held_out": HELD_OUT, "model": provenance, "methods": results,
        "noise_band": band, "fewest_calls_within_band": headline, "goals": goals, "fell_back": fell_back,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    })

    sampler = samplers[()]

    def timed():
        with guard():
            sampler.sample(n, seed=0, method="dpm_solver++", num_inference_steps=SMOKE_CASES[2][1] if smoke else 15)

    benchmark.pedantic(timed, rounds=1, warmup_rounds=0)
