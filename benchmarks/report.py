"""Turn a pytest-benchmark JSON of benchmarks/ into Markdown: a summary of ratios, then each group's tables.

    python benchmarks/report.py results.json > results.md
    python benchmarks/report.py --readme benchmarks/results [--write README.md]   # the README's Benchmarks section
    python benchmarks/report.py --docs benchmarks/results [--write docs/benchmarks.md]   # the docs' Benchmarks page

Kinds (each case's extra_info["kind"]): kernel (q-sample, reverse step, fused GroupNorm: GB/s over the copy rate),
unet_forward, training_step, sampling, onnx_runtime (images/s, over the bf16 matmul rate where it applies), guidance
(a classifier-free-guided step against an unguided one of twice the batch and diffusers' guidance loops), cold_start
(a fresh process to its first images, against the same chain warm).
"""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap

KIND_ORDER = ("kernel", "unet_forward", "training_step", "sampling", "guidance", "quality", "onnx_runtime",
              "cold_start")
README_HEADING = "## Benchmarks"


def kind_of(bench: dict) -> str | None:
    info = bench.get("extra_info", {})
    if "kind" in info:
        return info["kind"]
    return "kernel" if "seconds" in info and "gbps" in info else None  # result sets from before "kind" existed


def by_kind(results: dict) -> dict[str, list[dict]]:
    """{kind: [(benchmark group, extra_info) ...]} in KIND_ORDER, each sorted by case."""
    grouped: dict[str, list] = {kind: [] for kind in KIND_ORDER}
    for bench in results.get("benchmarks", []):
        kind = kind_of(bench)
        if kind in grouped:
            grouped[kind].append((bench.get("group") or bench.get("name", "?"), bench["extra_info"]))
    return {kind: cases for kind, cases in grouped.items() if cases}


# ------------------------------------------------------------------------------------------------ whole reports


def render(results: dict) -> str:
    machine = results.get("machine_info", {})
    commit = results.get("commit_info", {})
    versions = results.get("versions") or {"torch": machine.get("torch"), "triton": machine.get("triton")}
    lines = [
        f"Device: **{results.get('device') or machine.get('device', '?')}** · "
        + " · ".join(f"{name} {version}" for name, version in versions.items() if version) + " · "
        f"CUDA {machine.get('cuda')} · interpreter {machine.get('triton_interpreter')} · "
        f"commit {str(results.get('commit') or commit.get('id') or machine.get('commit', '?'))[:10]}"
        f"{' (dirty)' if commit.get('dirty') else ''} · {results.get('datetime', '')}",
    ]
    if results.get("command"):
        lines += ["", f"Mode: {results.get('mode') or machine.get('mode', 'full')} · command: `{results['command']}`"
                  + (f" · {results['wall_seconds']:.0f} s" if results.get("wall_seconds") else "")]
    load = machine.get("load_average")
    if load:
        lines += ["", f"Load average (1 min) at the start / end of the run: {load['start'][0]:.2f} / "
                      f"{load['end'][0]:.2f} ({machine.get('cpu', {}).get('count', '?')} CPUs)"]
    lines += ["", "Medians after warm-up. GB/s counts the bytes each call must move (in the case's dtype); the copy "
              "rate is a device-to-device copy of one tensor of the same size, measured in the same run; the matmul "
              "rate is a dense bf16 matmul measured in the same run."]
    rows = summary_rows(results)
    if rows:
        lines += ["", "Summary (ours: the fast path of each group; the best peer: the fastest other method measured):",
                  ""] + summary_table(rows)
    cases = by_kind(results)
    if "kernel" in cases:
        lines += _kernel_table(cases["kernel"])
    if "unet_forward" in cases:
        lines += _unet_table([info for _, info in cases["unet_forward"]])
    if "training_step" in cases:
        lines += _training_tables(sorted((info for _, info in cases["training_step"]),
                                         key=lambda info: (info["preset"], info["image_size"], info["batch"])))
    if "sampling" in cases:
        lines += _sampling_tables(sorted((info for _, info in cases["sampling"]),
                                         key=lambda info: (info["preset"], info["batch"])))
    if "guidance" in cases:
        lines += _guidance_table(sorted((info for _, info in cases["guidance"]),
                                        key=lambda info: (info["preset"], info["batch"])))
    if "quality" in cases:
        for _, info in cases["quality"]:
            lines += _quality_table(info)
    if "cold_start" in cases:
        lines += _cold_start_table([info for _, info in cases["cold_start"]])
    if "onnx_runtime" in cases:
        lines += _onnx_tables(sorted((info for _, info in cases["onnx_runtime"]),
                                     key=lambda info: (info["device"], info["batch"], info["preset"])))
    notes = [f"- suite {suite}: {reason}, skipped" for suite, reason in (results.get("suites_missing") or {}).items()]
    if results.get("stopped"):
        notes.append(f"- stopped by {results['stopped']} before the end: only the cases that finished are here")
    if results.get("pytest_exit_code") and not results.get("stopped"):
        notes.append(f"- pytest exit status {results['pytest_exit_code']}: some cases failed (see pytest.log); "
                     "only the cases that passed are here")
    if results.get("plots_skipped"):
        notes.append(f"- {results['plots_skipped']}")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def summary_rows(results: dict) -> list[tuple]:
    """(group, case, ours, vs naive, vs best peer, of ceiling) per case: the headline of every group."""
    rows = []
    for kind, cases in by_kind(results).items():
        for group, info in cases:
            rows.append(_SUMMARY[kind](group, info))
    return rows


def summary_table(rows: list[tuple]) -> list[str]:
    lines = ["| group | case | ours | vs naive | vs best peer | of ceiling |", "|---|---|---|---:|---:|---:|"]
    return lines + [f"| {' | '.join(row)} |" for row in rows]


def _summary_kernel(group: str, info: dict) -> tuple:
    seconds = info["seconds"]["ddpm_fast"]
    return (group, f"{_shape(info['shape'])} {info.get('dtype', 'float32')}",
            f"{seconds * 1e3:.3g} ms, {info['gbps']['ddpm_fast']:.3g} GB/s", f"{info['speedup_vs_naive']:.2f}x",
            f"{info['speedup_vs_compile']:.2f}x (torch.compile)", f"{fraction_of_copy(info)['ddpm_fast']:.1%} of copy")


def _summary_unet(group: str, info: dict) -> tuple:
    ours = _unet_ours(info)
    peer = info.get("best_peer")
    vs_peer = f"{info['speedup_vs_best_peer']:.2f}x ({peer})" if peer else "-"
    return (f"U-Net forward ({info['preset']})", f"batch {info['shape'][0]}, {_shape(info['shape'][1:])}",
            f"{_rate(info['images_per_s'][ours])} img/s ({ours})", f"{info['speedup_vs_fp32_eager'][ours]:.2f}x",
            vs_peer, f"{info['fraction_of_matmul'][ours]:.1%} of matmul")


def _summary_training(group: str, info: dict) -> tuple:
    ips = info["images_per_second"]
    peer = info.get("best_peer")
    vs_peer = f"{info['speedup_vs_best_peer']:.2f}x ({peer})" if peer and info.get("speedup_vs_best_peer") else "-"
    return (f"training step ({info['preset']})", f"batch {info['batch']}, {info['image_size']}², {info['dtype']}",
            f"{_rate(ips['ddpm_fast'])} img/s", f"{info['speedup_vs_naive']:.2f}x", vs_peer,
            f"{info['fraction_of_matmul_rate']:.1%} of matmul")


def _summary_sampling(group: str, info: dict) -> tuple:
    if _fell_back(info, "fast"):
        return (f"sampling ({info['preset']})", f"batch {info['batch']}, {_shape(info['sample_shape'])}",
                INVALID, "-", "-", "-")
    best = info.get("best_diffusers")
    vs_peer = f"{info['speedup_vs_best_diffusers']['fast']:.2f}x ({best})" if best else "-"
    return (f"sampling ({info['preset']})", f"batch {info['batch']}, {_shape(info['sample_shape'])}",
            f"{_rate(info['images_per_s']['fast'])} img/s ({info['num_timesteps']} steps)",
            f"{info['speedup_vs_naive']['fast']:.2f}x", vs_peer, f"{info['fraction_of_matmul']['fast']:.1%} of matmul")


def _summary_onnx(group: str, info: dict) -> tuple:
    if _fell_back(info, "fast"):
        return (f"ONNX Runtime ({info['device'].upper()})", f"{info['preset']}, batch {info['batch']}", INVALID,
                "-", "-", "-")
    best = info.get("best_ort")
    vs_peer = f"{info['fast_over'][best]:.2f}x ({best})" if best else "-"
    return (f"ONNX Runtime ({info['device'].upper()})", f"{info['preset']}, batch {info['batch']}",
            f"{_rate(info['images_per_s']['fast'])} img/s ({info['num_timesteps']} steps)",
            f"{info['speedup_vs_naive']['fast']:.2f}x", vs_peer, "-")


def _summary_guidance(group: str, info: dict) -> tuple:
    case = f"batch {info['batch']}, {_shape(info['sample_shape'])}, w={info['guidance_scale']:g}"
    if _fell_back(info, "fast_guided"):
        return (f"guided sampling ({info['preset']})", case, INVALID, "-", "-", "-")
    return (f"guided sampling ({info['preset']})", case,
            f"{info['seconds_per_step']['fast_guided'] * 1e3:.3g} ms/step, "
            f"{info['guidance_overhead_vs_conditional_2B']:+.1%} vs an unguided 2B step", "-",
            f"{info['speedup_vs_best_peer']:.2f}x ({info['best_peer']})", "-")


def _summary_quality(group: str, info: dict) -> tuple:
    methods = info["methods"]
    best = info["fewest_calls_within_band"]
    # the multistep solvers' fewest calls within the band (ties: the faster chain)
    solvers = [name for method, name in best.items() if "dpm_solver++" in method or "unipc" in method]
    solver = min(solvers, key=lambda name: (methods[name]["model_calls"], methods[name]["seconds"]), default=None)
    if solver is None:
        ours = "no DPM-Solver++ or UniPC chain within full DDPM's noise band"
    else:
        ours = (f"{methods[solver]['model_calls']} model calls ({solver}) within full DDPM's noise band, "
                f"{methods[solver]['speedup_vs_full_ddpm']:.1f}x less sampling time")
    return (f"quality vs time ({info['preset']})", f"n={info['num_samples']}, {info['seeds']} seeds, "
            f"T={info['num_timesteps']}", ours, "-", "-", "-")


def _quality_table(info: dict) -> list[str]:
    """Quality against time: one row per method and chain length."""
    low, high = info["noise_band"]
    lines = [
        "",
        f"Quality against time ({info['preset']}, {_shape(info['sample_shape'])}, T = {info['num_timesteps']}; model "
        f"{info['model']}): n = {info['num_samples']} samples per seed, {info['seeds']} seed(s), scored against "
        f"{info['held_out']} held-out images. rf_kid: the headline (lower is better); its floor (real vs real) and "
        "ceiling (noise vs real) are measured at the same n. The noise band is full DDPM's rf_kid over the seeds, "
        f"[{low:.3g}, {high:.3g}]: a method is within it when its mean is no worse than full DDPM's worst seed.",
        "",
        "| method | model calls | seconds | speed-up vs full DDPM | rf_kid (mean) | rf_kid over seeds | within band | "
        "pixel_sw | floor / ceiling rf_kid |",
        "|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for name, m in info["methods"].items():
        lines.append(f"| {m['method']} | {m['model_calls']} | {m['seconds']:.3g} | {m['speedup_vs_full_ddpm']:.1f}x | "
                     f"{m['rf_kid']:.3g} | {m['rf_kid_spread'][0]:.3g} … {m['rf_kid_spread'][1]:.3g} | "
                     f"{'yes' if m['within_band'] else 'no'} | {m['pixel_sw']:.3g} | {m['floor']['rf_kid']:.3g} / "
                     f"{m['ceiling']['rf_kid']:.3g} |")
    best = info["fewest_calls_within_band"]
    lines += ["", "Fewest model calls within the band: " + (", ".join(
        f"{method} {info['methods'][name]['model_calls']} ({info['methods'][name]['speedup_vs_full_ddpm']:.1f}x "
        "less time)" for method, name in best.items()) or "none") + "."]
    lines += [f"- goal: {goal}: {'met' if ok else 'NOT met'}" for goal, ok in info.get("goals", {}).items()]
    lines += [f"- {name} ran without a fast path: {reason}" for name, reason in (info.get("fell_back") or {}).items()]
    return lines


INVALID = "INVALID: the fast path fell back"


def _fell_back(info: dict, name: str) -> str | None:
    """Why FastSampler method `name` ran without a fast path it was built with (None: it ran as built). Such a
    method's figures are measured but never reported as ours: its cells say INVALID, its ratios are left out."""
    return (info.get("fell_back") or {}).get(name)


def _fell_back_notes(info: dict, case: str) -> list[str]:
    return [f"- {case}, {name} is INVALID (its fast path fell back, so its figures are not ours): {reason}"
            for name, reason in (info.get("fell_back") or {}).items()]


def _summary_cold_start(group: str, info: dict) -> tuple:
    case = f"batch {info['batch']}, {info['steps']} steps, {_shape(info['sample_shape'])}, fresh process"
    if _fell_back(info, "fast_pt2"):
        return (group, case, INVALID, "-", "-", "-")
    cold = info["cold_seconds"]
    vs_peer = f"{cold['diffusers'] / cold['fast_pt2']:.2f}x (diffusers)" if "diffusers" in cold else "-"
    return (group, case, f"{cold['fast_pt2']:.3g} s to the first images (pt2 package), "
                         f"{info['cold_over_warm']['fast_pt2']:.2f}x its warm chain", "-", vs_peer, "-")


def _cold_start_table(infos: list[dict]) -> list[str]:
    """Cold start: each method in a fresh process, seconds to its first images and its warm chain."""
    lines = []
    for info in infos:
        lines += [
            "",
            f"Cold start ({info['preset']}, {_shape(info['sample_shape'])}, batch {info['batch']}, "
            f"{info['steps']} DDPM steps, {info['dtype']}): each method in a fresh process, seconds from before its "
            "`import torch` to its first images (cold), then the same chain again (warm). fast_pt2 loads a package "
            f"of the U-Net compiled ahead of time ({info['package_bytes'] / 1e6:.0f} MB, exported in "
            f"{info['export_seconds']:.0f} s once before); fast_compile compiles with an empty inductor cache, "
            "fast_compile_cached reuses the cache it filled. "
            + (f"Goal: fast_pt2 cold <= {info['goal_cold_over_warm']:g}x its warm chain: "
               f"{'met' if info['goal_met'] else 'NOT met'}." if info.get("goal_cold_over_warm") else
               "No goal for this case (the issue's is ddpm-cifar10 at batch 16, 20 steps)."),
            "",
            "| method | cold s | warm s | cold / warm | how the steps ran |",
            "|---|---:|---:|---:|---|",
        ]
        for method, cold in info["cold_seconds"].items():
            shown = INVALID if _fell_back(info, method) else f"{cold:.3g}"
            lines.append(f"| {method} | {shown} | {info['warm_seconds'][method]:.3g} | "
                         f"{info['cold_over_warm'][method]:.2f}x | {info['decisions'][method]} |")
        lines += _fell_back_notes(info, f"batch {info['batch']}")
    return lines


_SUMMARY = {"kernel": _summary_kernel, "unet_forward": _summary_unet, "training_step": _summary_training,
            "sampling": _summary_sampling, "guidance": _summary_guidance, "quality": _summary_quality,
            "onnx_runtime": _summary_onnx, "cold_start": _summary_cold_start}


# ------------------------------------------------------------------------------------------------ group tables


def fraction_of_copy(info: dict) -> dict:
    """Every method's GB/s over the copy rate (older result sets stored ours alone: derive the rest)."""
    return info.get("fraction_of_copy") or {name: gbps / info["copy_gbps"] for name, gbps in info["gbps"].items()}


def _kernel_table(cases: list[tuple]) -> list[str]:
    lines = [
        "",
        "Memory-bound kernels: the naive eager ops, torch.compile of the same math and ours, with each one's GB/s as a "
        "fraction of the copy rate.",
        "",
        "| case | shape | dtype | naive eager ms | torch.compile ms | ddpm_fast ms | ddpm_fast GB/s | copy GB/s | "
        "of copy rate: naive / compile / ours | vs naive | vs compile |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group, info in cases:
        seconds, fraction = info["seconds"], fraction_of_copy(info)
        lines.append(
            f"| {group} | {_shape(info['shape'])} | {info.get('dtype', 'float32')} | "
            f"{seconds['naive_eager'] * 1e3:.4f} | {seconds['torch_compile'] * 1e3:.4f} | "
            f"{seconds['ddpm_fast'] * 1e3:.4f} | {info['gbps']['ddpm_fast']:.1f} | {info['copy_gbps']:.1f} | "
            f"{fraction['naive_eager']:.1%} / {fraction['torch_compile']:.1%} / {fraction['ddpm_fast']:.1%} | "
            f"{info['speedup_vs_naive']:.2f}x | {info['speedup_vs_compile']:.2f}x |"
        )
    return lines


def _unet_ours(info: dict) -> str:
    return info.get("ours") or ("bf16_cl_compiled" if "bf16_cl_compiled" in info["seconds"] else "bf16_cl_eager")


def _unet_table(infos: list[dict]) -> list[str]:
    lines = [
        "",
        "U-Net forward: images/s, achieved TFLOP/s (GFLOP per image as shown) and its fraction of the bf16 matmul "
        "rate measured in the same run; role: naive (fp32 eager), ours, or peer (diffusers' UNet2DModel, same "
        "weights).",
        "",
        "| model | shape | variant | role | ms | images/s | TFLOP/s | of matmul rate | vs fp32 eager | vs best peer | "
        "matmul TFLOP/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for info in sorted(infos, key=lambda info: (info["preset"], info["shape"])):
        roles = info.get("roles") or {}
        peer = info.get("best_peer")
        for variant, seconds in info["seconds"].items():
            vs_peer = f"{info['seconds'][peer] / seconds:.2f}x" if peer else "-"
            lines.append(
                f"| {info['preset']} ({info['gflop_per_image']:.2f} GFLOP/img) | {_shape(info['shape'])} | "
                f"{variant} | {roles.get(variant, '-')} | {seconds * 1e3:.3f} | {info['images_per_s'][variant]:.1f} | "
                f"{info['tflops'][variant]:.2f} | {info['fraction_of_matmul'][variant]:.0%} | "
                f"{info['speedup_vs_fp32_eager'][variant]:.2f}x | {vs_peer} | {info['matmul_tflops']:.1f} |"
            )
        for name, reason in (info.get("unavailable") or {}).items():
            notes.append(f"- {_shape(info['shape'])}, {name}: {reason}")
    return lines + ([""] + sorted(set(notes)) if notes else [])


def _training_tables(infos: list[dict]) -> list[str]:
    """Training step: a summary row per case, then every method's images/s and setup."""
    lines = [
        "",
        "Training step (forward + loss + backward + optimizer step): images/s; achieved TFLOP/s of ours over the bf16 "
        "matmul rate measured in the same run.",
        "",
        "| model | image | batch | dtype | device | ddpm_fast img/s | vs naive | vs best peer | GFLOP/img | TFLOP/s | "
        "of matmul rate | matmul TFLOP/s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for info in infos:
        peer = info.get("best_peer")
        vs_peer = f"{info['speedup_vs_best_peer']:.2f}x ({peer})" if peer and info.get("speedup_vs_best_peer") else "-"
        lines.append(
            f"| {info['preset']} | {info['image_size']} | {info['batch']} | {info['dtype']} | {info['device']} | "
            f"{_rate(info['images_per_second']['ddpm_fast'])} | {info['speedup_vs_naive']:.2f}x | {vs_peer} | "
            f"{info['gflop_per_image']:.3g} | {info['achieved_tflops']:.3g} | {info['fraction_of_matmul_rate']:.1%} | "
            f"{info['matmul_tflops']:.3g} |"
        )
    lines += ["", "| model | image | batch | method | img/s | vs naive | setup s |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for info in infos:
        ips = info["images_per_second"]
        naive = ips.get("naive_fp32_eager")
        for name, value in ips.items():
            setup = (info.get("setup_seconds") or {}).get(name)
            lines.append(f"| {info['preset']} | {info['image_size']} | {info['batch']} | {name} | {_rate(value)} | "
                         f"{f'{value / naive:.2f}x' if naive else '-'} | "
                         f"{'-' if setup is None else f'{setup:.1f}'} |")
    return lines


def _guidance_table(infos: list[dict]) -> list[str]:
    """Classifier-free guidance: ms per step of every method, the guided step's cost over an unguided step of 2B."""
    first = infos[0]
    peers = "fp16 + torch.compile" if first.get("peer_compiled") else f"{first.get('peer_dtype', 'fp32')} eager"
    lines = [
        "",
        f"Classifier-free guidance ({first['preset']}, {_shape(first['sample_shape'])}, w = "
        f"{first['guidance_scale']:g}): ms per step, median of {first['rounds']} chains of {first['steps_timed']} "
        "steps each (round-robin). fast_guided: FastSampler, one model call of 2B with the combination fused into "
        "the step; fast_conditional_2B: FastSampler at batch 2B without guidance (the same model work); diffusers: "
        f"its UNet2DModel and DDPMScheduler in its pipelines' guidance loop ({peers}), batch doubled by torch.cat "
        "(concat) or two model calls (two_pass).",
        "",
        "| batch | fast_guided | fast_conditional_2B | guided over unguided 2B | diffusers_concat | diffusers_two_pass "
        "| vs best diffusers | goals |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for info in infos:
        ms = {name: seconds * 1e3 for name, seconds in info["seconds_per_step"].items()}
        goals = ", ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in info["goals"].items()) or "-"
        guided = INVALID if _fell_back(info, "fast_guided") else f"{ms['fast_guided']:.3g}"
        lines.append(f"| {info['batch']} | {guided} | {ms['fast_conditional_2B']:.3g} | "
                     f"{info['guidance_overhead_vs_conditional_2B']:+.1%} | {ms['diffusers_concat']:.3g} | "
                     f"{ms['diffusers_two_pass']:.3g} | {info['speedup_vs_best_peer']:.2f}x ({info['best_peer']}) | "
                     f"{goals} |")
    for info in infos:
        lines += _fell_back_notes(info, f"batch {info['batch']}")
    return lines


def _sampling_tables(infos: list[dict]) -> list[str]:
    """End-to-end sampling: a summary row per batch, then every method's figures, then what could not run."""
    first = infos[0]
    steps, total = first["steps_timed"], first["num_timesteps"]
    lines = [
        "",
        f"End-to-end sampling ({first['preset']}, {'x'.join(map(str, first['sample_shape']))}): images/s for a "
        f"{total}-step chain. Every method runs {steps} steps after a warm-up (median of {first['repeats']} runs, "
        f"round-robin); images/s = batch / ({total} x seconds per step), the loop cost being linear in steps. "
        "Setup (compile, warm-up, graph capture) is not in any timing. Ceiling: the bf16 matmul rate measured in the "
        "same run over the model's FLOPs per image per step.",
        "",
        "| batch | naive img/s | best diffusers img/s | FastSampler img/s | vs naive | vs best diffusers | "
        "of matmul ceiling | ceiling img/s | best FastSampler option | goals |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for info in infos:
        ips = info["images_per_s"]
        best = info.get("best_diffusers")
        vs_best = info.get("speedup_vs_best_diffusers") or {}
        best_fast = info["best_fast"]
        peer = f"{_rate(ips[best])} ({best})" if best else "unavailable"
        if _fell_back(info, "fast"):
            fast_cells = f"{INVALID} | - | - | -"
        else:
            fast_vs_peer = f"{vs_best['fast']:.2f}x" if best else "-"
            fast_cells = (f"{_rate(ips['fast'])} | {info['speedup_vs_naive']['fast']:.2f}x | {fast_vs_peer} | "
                          f"{info['fraction_of_matmul']['fast']:.1%}")
        best_fast_cell = (f"{best_fast} ({_rate(ips[best_fast])} img/s, {info['speedup_vs_naive'][best_fast]:.2f}x "
                          "naive)" if best_fast else "none ran without falling back")
        lines.append(
            f"| {info['batch']} | {_rate(ips['naive'])} | {peer} | {fast_cells} | "
            f"{_rate(info['ceiling_images_per_s'])} | {best_fast_cell} | {_goals(info.get('goals', {}))} |"
        )
    lines += [
        "",
        "| batch | method | options | ms/step | img/s | vs naive | vs best diffusers | TFLOP/s | of matmul ceiling | "
        "setup s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for info in infos:
        vs_best = info.get("speedup_vs_best_diffusers") or {}
        for name, seconds in info["seconds_per_step"].items():
            name_vs_peer = f"{vs_best[name]:.2f}x" if name in vs_best else "-"
            figures = (f"{_rate(info['images_per_s'][name])} | {info['speedup_vs_naive'][name]:.2f}x | {name_vs_peer} | "
                       f"{info['tflops'][name]:.3g} | {info['fraction_of_matmul'][name]:.1%}")
            label = name
            if _fell_back(info, name):
                label, figures = f"{name} ({INVALID})", "- | - | - | - | -"
            lines.append(
                f"| {info['batch']} | {label} | {_options(info['options'].get(name, {}))} | {seconds * 1e3:.3f} | "
                f"{figures} | {info['setup_seconds'][name]:.1f} |"
            )
        for name, reason in (info.get("unavailable") or {}).items():
            notes.append(f"- batch {info['batch']}, {name}: {reason}")
        notes += _fell_back_notes(info, f"batch {info['batch']}")
        dpm = info.get("dpm_solver")
        if dpm:
            rates = dpm["images_per_s"]
            peer = (f"; diffusers' DPMSolverMultistepScheduler on {dpm['peer']}'s UNet {_rate(rates[dpm['peer']])} "
                    f"img/s" if dpm.get("peer") in rates else "")
            state = f" ({INVALID}: fell back)" if dpm.get("fast_fell_back") else ""
            notes.append(f"- batch {info['batch']}, DPM-Solver++ 2M, {dpm['steps']} model calls per chain: FastSampler "
                         f"{_rate(rates['fast'])} img/s{state}, {dpm['vs_fast_ddpm_full_chain']:.1f}x its "
                         f"{total}-step DDPM chain{peer}")
        errors = info.get("error_vs_fp32")
        if errors and len(errors) > 1:
            shown = ", ".join(f"{name} {error:.2g}" for name, error in errors.items() if name != "reference")
            notes.append(f"- batch {info['batch']}, the images against {errors['reference']}'s (fp32, the same seed "
                         f"and noise), max |difference| in [-1, 1] pixels: {shown}")
        full = info.get("fast_full_chain")
        if full and not _fell_back(info, "fast"):
            extrapolated = info["images_per_s"]["fast"]
            notes.append(f"- batch {info['batch']}, fast, the whole {total}-step chain: {_rate(full['images_per_s'])} "
                         f"img/s ({full['images_per_s'] / extrapolated:.2f}x the extrapolated figure)")
    parity = first.get("parity") or {}
    notes.append(f"- matmul ceiling: {first['matmul_tflops']:.3g} TFLOP/s (bf16, measured in this run); "
                 f"{first['gflop_per_image_per_step']:.3g} GFLOP per image per step")
    if parity:
        notes.append("- checked before timing (fp32, same noise, tiny model): "
                     + ", ".join(f"{name} {error:.1e}" for name, error in parity.items()))
    return lines + [""] + notes


def _onnx_tables(infos: list[dict]) -> list[str]:
    """ONNX Runtime vs PyTorch: a summary row per case, then every method's figures, then the notes."""
    first = infos[0]
    total = first["num_timesteps"]
    lines = [
        "",
        f"ONNX Runtime vs PyTorch sampling: images/s for a {total}-step chain. Every method samples the same "
        f"{first['steps_timed']}-step linear schedule (a DDPM step graph bakes its chain), the whole sample() call "
        f"timed after a warm-up chain (median of {first['repeats']} runs, round-robin); images/s = batch / "
        f"({total} x seconds per step). Setup (export, ORT session, compile, graph capture) is not in any timing. "
        "FastSampler / ORT > 1 means FastSampler is faster; \"best runs\": the same ratio over each method's fastest "
        "run (on a loaded shared CPU, torch's runs vary far more than ORT's).",
        "",
        "| model | batch | steps | naive img/s | PyTorch eager img/s | FastSampler img/s | best ORT img/s | "
        "FastSampler / best ORT | best runs | PyTorch eager / best ORT | goals |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for info in infos:
        ips = info["images_per_s"]
        best = info.get("best_ort")
        best_cell = f"{_rate(ips[best])} ({best})" if best else "unavailable"
        fast_over = f"{info['fast_over'][best]:.2f}x" if best else "-"
        best_runs = f"{info['fast_over_best_runs'][best]:.2f}x" if best and "fast_over_best_runs" in info else "-"
        eager_over = f"{info['torch_eager_over'][best]:.2f}x" if best else "-"
        goals = _goals(info.get("goals", {}))
        if info.get("goals_unmeasured"):
            goals = "; ".join(([] if goals == "-" else [goals]) +
                              [f"unmeasured: {goal}" for goal in info["goals_unmeasured"]])
        fast_cell = _rate(ips["fast"])
        if _fell_back(info, "fast"):
            fast_cell, fast_over, best_runs = INVALID, "-", "-"
        lines.append(
            f"| {_model(info)} | {info['batch']} | {info['steps_timed']} | {_rate(ips['naive'])} | "
            f"{_rate(ips['torch_eager'])} | {fast_cell} | {best_cell} | {fast_over} | {best_runs} | "
            f"{eager_over} | {goals} |"
        )
    lines += [
        "",
        "| model | batch | method | runtime | ms/step | img/s | best-run img/s | vs naive | vs PyTorch eager | "
        "FastSampler / this | setup s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for info in infos:
        fast_over = info.get("fast_over") or {}
        for name, seconds in info["seconds_per_step"].items():
            options = info["options"].get(name, {})
            runtime = _ort_options(options) if "provider" in options else "PyTorch: " + _options(options)
            ratio = f"{fast_over[name]:.2f}x" if name in fast_over and not _fell_back(info, "fast") else "-"
            best_run = (info.get("best_images_per_s") or {}).get(name)
            figures = (f"{_rate(info['images_per_s'][name])} | {_rate(best_run) if best_run else '-'} | "
                       f"{info['speedup_vs_naive'][name]:.2f}x | {info['speedup_vs_torch_eager'][name]:.2f}x")
            label = name
            if _fell_back(info, name):
                label, figures = f"{name} ({INVALID})", "- | - | - | -"
            lines.append(
                f"| {_model(info)} | {info['batch']} | {label} | {runtime} | {seconds * 1e3:.3f} | "
                f"{figures} | {ratio} | {info['setup_seconds'][name]:.1f} |"
            )
        case = f"{_model(info)}, batch {info['batch']}"
        notes += _fell_back_notes(info, case)
        by_reason: dict[str, list[str]] = {}
        for name, reason in (info.get("unavailable") or {}).items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            notes.append(f"- {case}, {', '.join(names)}: {reason}")
        exports = info.get("exports") or {}
        if exports:
            notes.append(f"- {case}, ONNX files: " + ", ".join(
                f"{name} ({'reused, ' if used.get('reused') else ''}{used['seconds']:.1f} s to "
                f"{'fuse' if used.get('fuse_contrib_ops') else 'export'}, {used['mb']:.1f} MiB)"
                for name, used in exports.items()))
        parity = info.get("parity") or {}
        if parity:
            notes.append(f"- {case}, checked before timing (same torch noise, tolerance "
                         f"{info.get('parity_tolerance', 0):g} where asserted): "
                         + ", ".join(f"{name} {error:.1e}" for name, error in parity.items()))
        load = info.get("load_average") or {}
        if load:
            notes.append(f"- {case}, load average (1 min) before / after: {load['before'][0]:.2f} / "
                         f"{load['after'][0]:.2f}")
        if info.get("note"):
            notes.append(f"- {case}: {info['note']}")
    notes.append(f"- onnxruntime {first.get('onnxruntime')}, available providers: "
                 f"{', '.join(first.get('providers') or [])}; CUDA provider with a GPU: "
                 f"{'yes' if first.get('cuda_provider_usable') else 'no'}; torch threads {first.get('torch_threads')}, "
                 f"ORT intra-op threads {first.get('ort_intra_op_threads')}")
    return lines + [""] + notes


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _model(info: dict) -> str:
    params = info.get("parameters")
    size = "x".join(map(str, info["sample_shape"][1:]))
    return f"{info['preset']} {size}" + (f" ({params / 1e6:.1f}M)" if params else "")


def _ort_options(options: dict) -> str:
    parts = [f"ORT {str(options.get('provider', '?')).replace('ExecutionProvider', '')}",
             str(options.get("dtype", "?")), f"{options.get('graph', '?')} graph"]
    if options.get("cuda_graph"):
        parts.append("CUDA graph")
    if options.get("io_binding"):
        parts.append("I/O binding")
    if str(options.get("file", "")).endswith("-contrib.onnx"):
        parts.append("contrib ops")
    return ", ".join(parts)


def _rate(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _options(options: dict) -> str:
    parts = [str(options.get("dtype", "?"))]
    if options.get("channels_last"):
        parts.append("NHWC")
    if options.get("compile"):
        parts.append("compile")
    elif "compile" in options:
        parts.append("eager")
    if options.get("cuda_graphs"):
        parts.append(f"graphs x{options.get('steps_per_graph')}")
    if options.get("eager"):
        parts.append("eager")
    return ", ".join(parts)


def _goals(goals: dict) -> str:
    return "; ".join(f"{'met' if met else 'NOT met'}: {goal}" for goal, met in goals.items()) or "-"


# ------------------------------------------------------------------------------------------------ README and docs


SUITE_INTRO = """\
```bash
pip install -c constraints.txt -e ".[bench]"     # pytest-benchmark, diffusers, onnxruntime
ddpm-fast bench --quick                           # every group at its smallest sizes
ddpm-fast bench --suite kernels unet --out DIR    # full sizes, meant for a GPU
ddpm-fast bench --quick --threads 1               # a CPU shared with other jobs: torch's 2 threads stall there
```

Suites: kernels, unet, training, sampling, guidance, quality, onnx (`--suite`; default all).

`ddpm-fast bench` runs `benchmarks/` (one pytest-benchmark suite; `pytest benchmarks/` runs it too) on whatever
device is present and writes `results.json` (pytest-benchmark's JSON plus device, versions, commit, mode and
command), `results.md` (the tables of ratios), `speedup_vs_batch.png` (speed-up over the naive reference vs batch
size, per method: U-Net forward, training step, sampling) and `fraction_of_ceiling.png` (each kernel's GB/s over the
copy rate, each U-Net variant's TFLOP/s over the matmul rate); the plots use matplotlib, a dependency of the
package, and are skipped with a message where it is missing. The suite ships with the repository, not the wheel:
run it from a checkout (by default a run writes a new `runs/bench-<device>-<date>[-quick]/` folder). It prints a
line as each case starts and ends, with the time so far, and saves the results after every case: a run stopped
with Ctrl-C or a kill keeps the cases that finished. Every case times our path beside its peers in the same process, after checking the fast output against the reference:

- **kernels**: q-sample and the reverse step (given and drawn noise), the fused GroupNorm + time embedding + SiLU
  forward and forward + backward — the seed's eager ops, `torch.compile` of the same math, ours; inputs rotate so
  caches do not flatter; GB/s of every method as a fraction of the device-to-device copy rate.
- **unet**: ddpm-cifar10 forward — fp32 eager (naive), ours in bf16 channels-last eager and compiled, diffusers'
  UNet2DModel fp32 and fp16 + `torch.compile` (fp32 + compile on a CPU).
- **training**: one training step — naive fp32 eager, compiled, diffusers bf16 + compile, ours.
- **sampling**: whole DDPM chains — the seed's loop, diffusers' DDPMPipeline (fp32; fp16 + compile), FastSampler;
  on a CPU also FastSampler eager beside the seed's loop on diffusers' UNet2DModel (the eager path on a foreign model);
  lucidrains' denoising-diffusion-pytorch: its own `p_sample_loop` on its own Unet beside FastSampler (its defaults
  for the device) on the same Unet (where the library is installed: `tests/requirements-no-deps.txt`); and whole
  20-call DPM-Solver++ chains beside diffusers' DPMSolverMultistepScheduler.
- **guidance**: a classifier-free-guided chain (one model call of 2B, the combination fused into the step) beside
  FastSampler's unguided chain of 2B and diffusers' guidance loops (batch doubled by `torch.cat`, or two passes).
- **quality**: quality against time on the demo's trained model — full DDPM, respaced DDPM, DDIM, DPM-Solver++
  (ODE and SDE; 2M and 3M) and UniPC (orders 2 and 3) at several chain lengths, n = 256 samples per seed, rf_kid and pixel_sw with their floor and
  ceiling, the seeds' spread as the noise band; `quality_vs_time.png`.
- **onnx**: OnnxSampler on ONNX Runtime (CPU; CUDA fp16/fp32, CUDA graph, contrib ops on a GPU) vs PyTorch.

Ceilings are measured in the same run: the device-to-device copy rate (GB/s) and the dense bf16 matmul rate
(TFLOP/s); every U-Net, training and sampling figure is also a fraction of the matmul rate (one ddpm-cifar10 forward
at 32×32 is 12.4 GFLOP per image). GPU timings are `triton.testing.do_bench` medians (CUDA events) after warm-up;
CPU timings are wall-clock medians. Quick mode (`--quick`, `DDPM_FAST_BENCH_QUICK=1`) still measures, with fewer
sizes and rounds and the tiny U-Net on a CPU; CI runs the suite in smoke mode (`--benchmark-disable`: every case once
at its smallest size) so it never rots. On a lent GPU machine, `bash benchmarks/run_on_device.sh <commit> [call]`
runs one call of the device plan (`benchmarks/device_plan.py`: call 1 the gpu tests and the headline, calls 2-5 the
other groups, each within ~9 minutes); `ddpm-fast bench --merge part1/ part2/ --out DIR` joins the calls into one
set. A FastSampler row whose compile or CUDA graphs fell back is marked INVALID, never reported as ours.
Committed result sets live in `benchmarks/results/<device>-<date>[-…]/`, as the runs wrote them, never edited by
hand. This page and the README's table are generated from them (`python benchmarks/report.py --docs
benchmarks/results --write docs/benchmarks.md`, `--readme benchmarks/results --write README.md`; a test checks both
match): the latest GPU set, or, while there is none, each group's latest CPU set.
"""

README_INTRO = (
    "`ddpm-fast bench --quick` runs every group at its smallest sizes; the suite, its peers and every committed result "
    "set are described in the docs' Benchmarks page (`docs/benchmarks.md`). The table below is generated from the "
    "committed result sets (`python benchmarks/report.py --readme benchmarks/results --write README.md`; a test checks "
    "it matches)."
)

CPU_CAVEAT = (
    "These are CPU figures, not GPU figures: on a CPU the Triton kernels run their plain-PyTorch fallbacks, and on a "
    "2-core machine shared with other jobs torch's timings wander widely with the load: while another process holds a "
    "core, torch's two threads wait on each other and a small call can take tens of times longer (each set records "
    "the load average at its start and end). They show that the suite works and how the paths compare on that CPU; "
    "they say nothing about a GPU."
)


def result_sets(root: pathlib.Path) -> list[tuple[pathlib.Path, dict]]:
    """Every committed result set under `root`: (folder, results), oldest first (by the run's own datetime)."""
    sets = []
    for path in sorted(root.glob("*/results.json")):
        with open(path, encoding="utf-8") as handle:
            sets.append((path.parent, json.load(handle)))
    return sorted(sets, key=lambda item: item[1].get("datetime", ""))


def is_gpu(results: dict) -> bool:
    machine = results.get("machine_info", {})
    kind = results.get("device_type") or machine.get("device_type")
    if kind:
        return kind == "cuda"
    return not str(machine.get("device", "CPU")).startswith("CPU")


def _headline(root: pathlib.Path, with_commit: bool) -> list[str]:
    """Which result sets the summary comes from (the latest GPU set; without one, each group's latest CPU set,
    labelled as CPU figures), then the summary table."""
    sets = result_sets(root)
    gpu = [item for item in sets if is_gpu(item[1])]
    if gpu:
        folder, results = gpu[-1]
        lines = [_wrap(f"Latest GPU result set: **{_device(results)}**, "
                       f"{_where(root, folder, results, with_commit)}."), ""]
        rows = summary_rows(results)
    elif sets:
        latest = latest_set_per_kind(sets)
        used = list(dict.fromkeys(id(results) for _, (_, results) in latest.items()))
        described = []
        for folder, results in (item for item in sets if id(item[1]) in used):
            kinds = ", ".join(kind for kind, (_, chosen) in latest.items() if chosen is results)
            described.append(f"{_where(root, folder, results, with_commit)} for {kinds}")
        lines = [_wrap("**No GPU result set has been committed yet**, so no GPU figure is quoted. The latest "
                       f"CPU result sets ({_device(sets[-1][1])}) are, per group: {'; '.join(described)}. "
                       f"{CPU_CAVEAT}"), ""]
        rows = [row for kind, (_, results) in latest.items()
                for row in summary_rows({"benchmarks": [bench for bench in results.get("benchmarks", [])
                                                         if kind_of(bench) == kind]})]
    else:
        return ["No result set has been committed yet."]
    return lines + (summary_table(rows) if rows else ["(this set holds no case the summary covers)"])


def readme_section(root: pathlib.Path) -> str:
    """The README's Benchmarks section: one paragraph on running the suite, then the summary of the latest GPU
    result set; with no GPU set, says so and shows, for each group, the latest CPU set that measured it, labelled as
    CPU figures. No commit hashes (each set's results.json records its own)."""
    return "\n".join([README_HEADING, "", _wrap(README_INTRO), "", *_headline(root, with_commit=False)]) + "\n"


def docs_page(root: pathlib.Path) -> str:
    """The docs' Benchmarks page: how to run the suite and what it measures, the summary (as the README's, with
    each set's commit), and every committed result set."""
    lines = ["# Benchmarks", "",
             "<!-- Generated by `python benchmarks/report.py --docs benchmarks/results --write docs/benchmarks.md`: "
             "edit benchmarks/report.py, not this file. -->", "",
             SUITE_INTRO.rstrip("\n"), "", "## The latest figures", "", *_headline(root, with_commit=True)]
    sets = result_sets(root)
    if sets:
        lines += ["", "## Every committed result set", "",
                  "| folder | device | mode | date | commit | groups |", "|---|---|---|---|---|---|"]
        for folder, results in reversed(sets):
            mode = results.get("mode") or results.get("machine_info", {}).get("mode") or "full"
            commit = str(results.get("commit") or results.get("commit_info", {}).get("id", "?"))[:10]
            kinds = ", ".join(by_kind(results)) or "-"
            lines.append(f"| `{root.name}/{folder.name}/` | {_device(results)} | {mode} | "
                         f"{str(results.get('datetime', '?'))[:10]} | {commit} | {kinds} |")
    return "\n".join(lines) + "\n"


def latest_set_per_kind(sets: list[tuple[pathlib.Path, dict]]) -> dict[str, tuple[pathlib.Path, dict]]:
    """{kind: (folder, results)} of the newest set (sets are oldest first) holding each kind, in KIND_ORDER."""
    latest = {}
    for folder, results in sets:
        for kind in by_kind(results):
            latest[kind] = (folder, results)
    return {kind: latest[kind] for kind in KIND_ORDER if kind in latest}


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=118, break_long_words=False, break_on_hyphens=False)


def _device(results: dict) -> str:
    return results.get("device") or results.get("machine_info", {}).get("device", "?")


def _where(root: pathlib.Path, folder: pathlib.Path, results: dict, with_commit: bool = True) -> str:
    commit = str(results.get("commit") or results.get("commit_info", {}).get("id", "?"))[:10]
    mode = results.get("mode") or results.get("machine_info", {}).get("mode") or "full"
    quick = ": fewer sizes and rounds, the tiny U-Net on a CPU" if mode == "quick" else ""
    when = f"commit {commit}, " if with_commit else ""
    return (f"`{root.parent.name}/{root.name}/{folder.name}/` ({mode} mode{quick}; {when}"
            f"{str(results.get('datetime', '?'))[:10]}; every table in its `results.md`)")


def replace_readme_section(readme: str, section: str) -> str:
    """`readme` with its Benchmarks section (the heading up to the next "## " heading or the end) replaced."""
    start = readme.index(README_HEADING + "\n")
    end = readme.find("\n## ", start + len(README_HEADING))
    tail = readme[end + 1:] if end != -1 else ""
    return readme[:start] + section + ("\n" + tail if tail else "")


def readme_benchmarks_section(readme: str) -> str:
    """The Benchmarks section as it stands in `readme`."""
    start = readme.index(README_HEADING + "\n")
    end = readme.find("\n## ", start + len(README_HEADING))
    return readme[start:end] if end != -1 else readme[start:]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and not argv[1].startswith("-"):
        with open(argv[1], encoding="utf-8") as handle:
            sys.stdout.write(render(json.load(handle)))
        return 0
    if len(argv) in (3, 5) and argv[1] == "--readme" and (len(argv) == 3 or argv[3] == "--write"):
        section = readme_section(pathlib.Path(argv[2]))
        if len(argv) == 3:
            sys.stdout.write(section)
            return 0
        readme = pathlib.Path(argv[4])
        readme.write_text(replace_readme_section(readme.read_text(encoding="utf-8"), section), encoding="utf-8")
        return 0
    if len(argv) in (3, 5) and argv[1] == "--docs" and (len(argv) == 3 or argv[3] == "--write"):
        page = docs_page(pathlib.Path(argv[2]))
        if len(argv) == 3:
            sys.stdout.write(page)
            return 0
        pathlib.Path(argv[4]).write_text(page, encoding="utf-8")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
