"""Turn a pytest-benchmark JSON of benchmarks/ into a Markdown table of ratios.

    python benchmarks/report.py results.json > results.md
"""

from __future__ import annotations

import json
import sys


def render(results: dict) -> str:
    machine = results.get("machine_info", {})
    commit = results.get("commit_info", {})
    lines = [
        f"Device: **{machine.get('device', '?')}** · torch {machine.get('torch', '?')} · "
        f"triton {machine.get('triton', '?')} · CUDA {machine.get('cuda')} · "
        f"interpreter {machine.get('triton_interpreter')} · "
        f"commit {str(commit.get('id') or machine.get('commit', '?'))[:10]}"
        f"{' (dirty)' if commit.get('dirty') else ''} · {results.get('datetime', '')}",
        "",
        "Medians after warm-up. GB/s counts the bytes each call must move (in the case's dtype); the copy rate is a "
        "device-to-device copy of one tensor of the same size, measured in the same run.",
    ]
    kernel_rows = []
    unet_rows = []
    sampling = []
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("kind") == "unet_forward":
            unet_rows.append(_unet_row(info))
            continue
        if info.get("kind") == "sampling":
            sampling.append(info)
            continue
        if "seconds" not in info:
            continue
        seconds = info["seconds"]
        kernel_rows.append(
            f"| {bench.get('group', bench['name'])} | {'x'.join(map(str, info['shape']))} | "
            f"{info.get('dtype', 'float32')} | {seconds['naive_eager'] * 1e3:.4f} | {seconds['torch_compile'] * 1e3:.4f} | "
            f"{seconds['ddpm_fast'] * 1e3:.4f} | {info['gbps']['ddpm_fast']:.1f} | {info['copy_gbps']:.1f} | "
            f"{info['fraction_of_copy_rate']:.0%} | {info['speedup_vs_naive']:.2f}x | "
            f"{info['speedup_vs_compile']:.2f}x |"
        )
    if kernel_rows:
        lines += [
            "",
            "| case | shape | dtype | naive eager ms | torch.compile ms | ddpm_fast ms | ddpm_fast GB/s | copy GB/s | "
            "of copy rate | vs naive | vs compile |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ] + kernel_rows
    if unet_rows:
        lines += [
            "",
            "U-Net forward: images/s, achieved TFLOP/s (GFLOP per image as shown) and its fraction of the bf16 matmul "
            "rate measured in the same run.",
            "",
            "| model | shape | variant | ms | images/s | TFLOP/s | of matmul rate | vs fp32 eager | matmul TFLOP/s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ] + [row for rows in unet_rows for row in rows]
    if sampling:
        lines += _sampling_tables(sorted(sampling, key=lambda info: (info["preset"], info["batch"])))
    return "\n".join(lines) + "\n"


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
        fast_vs_peer = f"{vs_best['fast']:.2f}x" if best else "-"
        lines.append(
            f"| {info['batch']} | {_rate(ips['naive'])} | {peer} | {_rate(ips['fast'])} | "
            f"{info['speedup_vs_naive']['fast']:.2f}x | {fast_vs_peer} | "
            f"{info['fraction_of_matmul']['fast']:.1%} | {_rate(info['ceiling_images_per_s'])} | "
            f"{best_fast} ({_rate(ips[best_fast])} img/s, {info['speedup_vs_naive'][best_fast]:.2f}x naive) | "
            f"{_goals(info.get('goals', {}))} |"
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
            lines.append(
                f"| {info['batch']} | {name} | {_options(info['options'].get(name, {}))} | {seconds * 1e3:.3f} | "
                f"{_rate(info['images_per_s'][name])} | {info['speedup_vs_naive'][name]:.2f}x | {name_vs_peer} | "
                f"{info['tflops'][name]:.3g} | {info['fraction_of_matmul'][name]:.1%} | "
                f"{info['setup_seconds'][name]:.1f} |"
            )
        for name, reason in (info.get("unavailable") or {}).items():
            notes.append(f"- batch {info['batch']}, {name}: {reason}")
        full = info.get("fast_full_chain")
        if full:
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


def _unet_row(info: dict) -> list[str]:
    rows = []
    for variant, seconds in info["seconds"].items():
        rows.append(
            f"| {info['preset']} ({info['gflop_per_image']:.2f} GFLOP/img) | {'x'.join(map(str, info['shape']))} | "
            f"{variant} | {seconds * 1e3:.3f} | {info['images_per_s'][variant]:.1f} | {info['tflops'][variant]:.2f} | "
            f"{info['fraction_of_matmul'][variant]:.0%} | {info['speedup_vs_fp32_eager'][variant]:.2f}x | "
            f"{info['matmul_tflops']:.1f} |"
        )
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        sys.stdout.write(render(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
