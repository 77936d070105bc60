"""Command line: `ddpm-fast <command>` (also `python -m ddpm_fast`)."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="time the fast sampler beside the naive reference")
    demo.add_argument("--num-samples", type=_positive_int, default=16)
    demo.add_argument("--image-size", type=_positive_int, default=32)
    demo.add_argument("--timesteps", type=_positive_int, default=200)
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.num_samples, args.image_size, args.timesteps, args.device, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
