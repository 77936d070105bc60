"""PNG plots of a results.json (matplotlib, Agg backend), written by `ddpm-fast bench` beside results.md.

speedup_vs_batch.png     speed-up over the naive reference vs batch size, one line per method: U-Net forward,
                         training step, end-to-end sampling, ONNX Runtime (one panel per group and model).
fraction_of_ceiling.png  each kernel's GB/s as a fraction of the copy rate, per method (grouped bars); each U-Net
                         forward, training-step and sampling figure as a fraction of the bf16 matmul rate.
quality_vs_time.png      rf_kid against sampling seconds, one line per method (its chain lengths), the seeds'
                         spread as error bars and full DDPM's noise band shaded.
"""

from __future__ import annotations

import pathlib
import textwrap

# The suite folder is on sys.path under pytest, and ddpm_fast.cli.bench puts it there before loading this file.
from report import by_kind, fraction_of_copy

SPEEDUP_PLOT = "speedup_vs_batch.png"
QUALITY_PLOT = "quality_vs_time.png"
CEILING_PLOT = "fraction_of_ceiling.png"


def speedup_series(results: dict) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{panel title: {method: [(batch, speed-up over the naive reference), ...]}}, batches ascending."""
    panels: dict[str, dict[str, list]] = {}

    def add(title: str, batch: int, speedups: dict) -> None:
        for method, value in speedups.items():
            panels.setdefault(title, {}).setdefault(method, []).append((batch, value))

    cases = by_kind(results)
    for _, info in cases.get("unet_forward", []):
        add(f"U-Net forward ({info['preset']}, {info['shape'][2]}x{info['shape'][3]})", info["shape"][0],
            info["speedup_vs_fp32_eager"])
    for _, info in cases.get("training_step", []):
        ips = info["images_per_second"]
        naive = ips.get("naive_fp32_eager")
        if naive:
            add(f"training step ({info['preset']}, {info['image_size']}px, {info['dtype']})", info["batch"],
                {method: value / naive for method, value in ips.items()})
    for _, info in cases.get("sampling", []):
        add(f"sampling ({info['preset']}, {info['sample_shape'][1]}x{info['sample_shape'][2]})", info["batch"],
            valid(info, info["speedup_vs_naive"]))
    for _, info in cases.get("onnx_runtime", []):
        add(f"ONNX Runtime vs PyTorch ({info['preset']}, {info['device']})", info["batch"],
            valid(info, info["speedup_vs_naive"]))
    for panel in panels.values():
        for points in panel.values():
            points.sort()
    return {title: {method: panel[method] for method in sorted(panel, key=method_rank)} for title, panel in panels.items()}


def valid(info: dict, figures: dict) -> dict:
    """figures without the methods whose fast path fell back (report.py marks them INVALID; no plot shows them)."""
    fell_back = info.get("fell_back") or {}
    return {method: value for method, value in figures.items() if method not in fell_back}


def method_rank(name: str) -> int:
    """Legend order: the naive reference first, then the peers, ours last."""
    if "naive" in name or name == "fp32_eager":
        return 0
    return 2 if name in ("ddpm_fast", "fast") or name.startswith(("fast_", "bf16_cl_")) else 1


def ceiling_panels(results: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{panel title: {case label: {method: fraction of the ceiling}}}."""
    panels: dict[str, dict[str, dict]] = {}
    cases = by_kind(results)
    for group, info in cases.get("kernel", []):
        label = f"{group}\n{'x'.join(map(str, info['shape']))}"
        panels.setdefault("memory-bound kernels: GB/s / copy rate", {})[label] = fraction_of_copy(info)
    for _, info in cases.get("unet_forward", []):
        label = f"{info['preset']} batch {info['shape'][0]}"
        panels.setdefault("U-Net forward: TFLOP/s / bf16 matmul rate", {})[label] = info["fraction_of_matmul"]
    for _, info in cases.get("training_step", []):
        label = f"{info['preset']} batch {info['batch']}"
        panels.setdefault("training step (ours): TFLOP/s / bf16 matmul rate", {})[label] = {
            "ddpm_fast": info["fraction_of_matmul_rate"]}
    for _, info in cases.get("sampling", []):
        label = f"{info['preset']} batch {info['batch']}"
        panels.setdefault("sampling: TFLOP/s / bf16 matmul rate", {})[label] = valid(info, info["fraction_of_matmul"])
    return panels


def write_plots(results: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """Write the plots that `results` has data for into `out`; the paths written. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = results.get("device") or results.get("machine_info", {}).get("device", "?")
    mode = results.get("mode") or results.get("machine_info", {}).get("mode") or "full"
    written = []
    series = speedup_series(results)
    if series:
        figure, axes = plt.subplots(len(series), 1, figsize=(8, 3.6 * len(series)), squeeze=False,
                                    layout="constrained")  # leaves room for the suptitle
        for axis, (title, methods) in zip(axes[:, 0], series.items()):
            for method, points in methods.items():
                batches, speedups = zip(*points)
                axis.plot(batches, speedups, marker="o", label=method)
            axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            axis.set_xscale("log", base=2)
            axis.set_xlabel("batch size")
            axis.set_ylabel("speed-up vs naive")
            axis.set_title(title)
            axis.legend(fontsize=7, loc="best")
        figure.suptitle(f"{device} ({mode} mode)", fontsize=10)
        written.append(_save(figure, out / SPEEDUP_PLOT, plt))
    panels = ceiling_panels(results)
    if panels:
        widest = max(len(cases) for cases in panels.values())
        figure, axes = plt.subplots(len(panels), 1, figsize=(max(10, 1.9 * widest), 4.4 * len(panels)), squeeze=False,
                                    layout="constrained")
        for axis, (title, cases) in zip(axes[:, 0], panels.items()):
            _grouped_bars(axis, cases)
            axis.set_ylabel("fraction of ceiling")
            axis.set_title(title)
        figure.suptitle(f"{device} ({mode} mode): ceilings measured in the same run", fontsize=10)
        written.append(_save(figure, out / CEILING_PLOT, plt))
    for _, info in by_kind(results).get("quality", [])[:1]:
        figure, axis = plt.subplots(figsize=(8, 5), layout="constrained")
        low, high = info["noise_band"]
        axis.axhspan(low, high, color="grey", alpha=0.2, label="full DDPM over seeds (noise band)")
        by_method: dict[str, list] = {}
        for m in info["methods"].values():
            by_method.setdefault(m["method"], []).append(m)
        for method, points in by_method.items():
            points.sort(key=lambda m: m["seconds"])
            means = [m["rf_kid"] for m in points]
            errors = [[mean - m["rf_kid_spread"][0] for mean, m in zip(means, points)],
                      [m["rf_kid_spread"][1] - mean for mean, m in zip(means, points)]]
            axis.errorbar([m["seconds"] for m in points], means, yerr=errors, marker="o", capsize=3, label=method)
            for m in points:
                axis.annotate(str(m["model_calls"]), (m["seconds"], m["rf_kid"]), fontsize=7,
                              textcoords="offset points", xytext=(4, 4))
        axis.set_xscale("log")
        axis.set_xlabel(f"sampling seconds for {info['num_samples']} samples (labels: model calls)")
        axis.set_ylabel("rf_kid vs held-out (lower is better)")
        axis.legend(fontsize=8)
        figure.suptitle(f"{device} ({mode} mode): quality against time, T = {info['num_timesteps']}, "
                        f"{info['seeds']} seed(s)", fontsize=10)
        written.append(_save(figure, out / QUALITY_PLOT, plt))
    return written


def _grouped_bars(axis, cases: dict[str, dict[str, float]]) -> None:
    methods = sorted(dict.fromkeys(method for fractions in cases.values() for method in fractions), key=method_rank)
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        positions = [case + (index - (len(methods) - 1) / 2) * width for case in range(len(cases))]
        values = [fractions.get(method, 0.0) for fractions in cases.values()]
        axis.bar(positions, values, width=width, label=method)
    axis.set_xticks(range(len(cases)))
    axis.set_xticklabels([textwrap.fill(label, 22) for label in cases], fontsize=7)
    axis.yaxis.set_major_formatter(_percent())
    axis.legend(fontsize=7, loc="best")


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0)


def _save(figure, path: pathlib.Path, plt) -> pathlib.Path:
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
