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
        "Medians after warm-up. GB/s counts the bytes each call must move (float32); the copy rate is a "
        "device-to-device copy of one tensor of the same size, measured in the same run.",
        "",
        "| case | shape | naive eager ms | torch.compile ms | ddpm_fast ms | ddpm_fast GB/s | copy GB/s | "
        "of copy rate | vs naive | vs compile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "seconds" not in info:
            continue
        seconds = info["seconds"]
        lines.append(
            f"| {bench.get('group', bench['name'])} | {'x'.join(map(str, info['shape']))} | "
            f"{seconds['naive_eager'] * 1e3:.4f} | {seconds['torch_compile'] * 1e3:.4f} | "
            f"{seconds['ddpm_fast'] * 1e3:.4f} | {info['gbps']['ddpm_fast']:.1f} | {info['copy_gbps']:.1f} | "
            f"{info['fraction_of_copy_rate']:.0%} | {info['speedup_vs_naive']:.2f}x | "
            f"{info['speedup_vs_compile']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        sys.stdout.write(render(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
