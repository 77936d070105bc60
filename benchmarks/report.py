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
        "",
        "| case | shape | dtype | naive eager ms | torch.compile ms | ddpm_fast ms | ddpm_fast GB/s | copy GB/s | "
        "of copy rate | vs naive | vs compile |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unet_rows = []
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("kind") == "unet_forward":
            unet_rows.append(_unet_row(info))
            continue
        if "seconds" not in info:
            continue
        seconds = info["seconds"]
        lines.append(
            f"| {bench.get('group', bench['name'])} | {'x'.join(map(str, info['shape']))} | "
            f"{info.get('dtype', 'float32')} | {seconds['naive_eager'] * 1e3:.4f} | {seconds['torch_compile'] * 1e3:.4f} | "
            f"{seconds['ddpm_fast'] * 1e3:.4f} | {info['gbps']['ddpm_fast']:.1f} | {info['copy_gbps']:.1f} | "
            f"{info['fraction_of_copy_rate']:.0%} | {info['speedup_vs_naive']:.2f}x | "
            f"{info['speedup_vs_compile']:.2f}x |"
        )
    if unet_rows:
        lines += [
            "",
            "U-Net forward: images/s, achieved TFLOP/s (GFLOP per image as shown) and its fraction of the bf16 matmul "
            "rate measured in the same run.",
            "",
            "| model | shape | variant | ms | images/s | TFLOP/s | of matmul rate | vs fp32 eager | matmul TFLOP/s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ] + [row for rows in unet_rows for row in rows]
    return "\n".join(lines) + "\n"


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
