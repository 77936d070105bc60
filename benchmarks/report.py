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
    onnx = []
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("kind") == "onnx_runtime":
            onnx.append(info)
            continue
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
    if onnx:
        lines += _onnx_tables(sorted(onnx, key=lambda info: (info["device"], info["batch"], info["preset"])))
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
        lines.append(
            f"| {_model(info)} | {info['batch']} | {info['steps_timed']} | {_rate(ips['naive'])} | "
            f"{_rate(ips['torch_eager'])} | {_rate(ips['fast'])} | {best_cell} | {fast_over} | {best_runs} | "
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
            ratio = f"{fast_over[name]:.2f}x" if name in fast_over else "-"
            best_run = (info.get("best_images_per_s") or {}).get(name)
            lines.append(
                f"| {_model(info)} | {info['batch']} | {name} | {runtime} | {seconds * 1e3:.3f} | "
                f"{_rate(info['images_per_s'][name])} | {_rate(best_run) if best_run else '-'} | "
                f"{info['speedup_vs_naive'][name]:.2f}x | "
                f"{info['speedup_vs_torch_eager'][name]:.2f}x | {ratio} | {info['setup_seconds'][name]:.1f} |"
            )
        case = f"{_model(info)}, batch {info['batch']}"
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
