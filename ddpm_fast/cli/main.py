"""Command line: `ddpm-fast <command>` (also `python -m ddpm_fast`).

    ddpm-fast train --run-dir runs/shapes --steps 2000
    ddpm-fast sample --checkpoint runs/shapes --num-samples 64 --out grid.png
    torchrun --nproc_per_node 4 -m ddpm_fast sample --diffusers ddpm-cifar10-32/ --out samples.safetensors
    ddpm-fast export --diffusers ddpm-cifar10-32/ --graph ddpm_step --out step.onnx
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import signal
import sys
import warnings

from . import arguments, bench
from .export import add_export_parser, run_export_command
from .flags import error_text
from .sample import add_sample_parser, run_sample_command
from .threads import HELP_NOTE as THREADS_NOTE
from .threads import check_thread_environment, configure_torch_threads
from .train import add_train_parser, run_train


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(prog="ddpm-fast", description=__doc__, formatter_class=arguments.HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train the tiny U-Net on generated shapes, then time FastSampler beside the naive loop",
        description="The main job: trains the tiny U-Net on the embedded shapes dataset (about two minutes on 2 "
                    "quiet CPU cores; longer and larger on a GPU), samples the EMA weights with FastSampler and with "
                    "the seed's naive loop, prints both times, the ratio and a quality figure, then a short table of "
                    "the same model in fewer model calls (DDIM, DPM-Solver++), and writes PNG grids of samples and "
                    "training data into --run-dir. A second run reuses the trained checkpoint there."
                    + THREADS_NOTE)
    demo.add_argument("--run-dir", type=pathlib.Path, default=pathlib.Path("runs/demo"), metavar="DIR")
    demo.add_argument("--steps", type=arguments.positive_int, default=None,
                      help="training steps (default: the device's plan, 1200 on a CPU, 4000 on a GPU)")
    demo.add_argument("--batch-size", type=arguments.positive_int, default=None,
                      help="(default: the device's plan, 32 on a CPU, 128 on a GPU)")
    demo.add_argument("--timesteps", type=arguments.positive_int, default=None,
                      help="T, the length of the sampling chain (default: the device's plan, 250 on a CPU, 1000 on a "
                           "GPU)")
    demo.add_argument("--num-samples", type=arguments.positive_int, default=None,
                      help="at least 2: the quality figures compare sets (default: 64)")
    demo.add_argument("--device", type=arguments.device, default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--seed", type=arguments.seed, default=0)
    demo.add_argument("--no-compile", action="store_true", help="FastSampler without torch.compile")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_train_parser(commands)
    add_sample_parser(commands)
    add_export_parser(commands)
    bench.add_bench_parser(commands)
    for command in commands.choices.values():  # every subcommand's --help shows its defaults
        arguments.show_defaults(command)
    parser.subcommands = dict(commands.choices)  # type: ignore[attr-defined]  # name -> its parser, for errors
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = arguments.attach_list_values(list(sys.argv[1:] if argv is None else argv))
    args, unknown = parser.parse_known_args(argv)
    command_parser = parser.subcommands[args.command]  # its errors name the subcommand and point to its --help
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "train":  # a resumed run takes the flags given, and its stored setup for the rest
        args.given = arguments.given_destinations(command_parser, argv[argv.index("train") + 1:])
    _show_notes()
    if args.command in ("demo", "train", "sample") and not args.device.startswith("cuda"):
        try:  # before the slow imports: a bad DDPM_FAST_THREADS is reported at once
            check_thread_environment()
        except ValueError as error:
            print(f"ddpm-fast {args.command}: error: {error}", file=sys.stderr)
            return 2
    if args.command == "demo" and args.num_samples is not None and args.num_samples < 2:
        command_parser.error(f"--num-samples must be at least 2 (the quality figures compare sets of images), got "
                             f"{args.num_samples}")
    if args.command == "demo":
        # imported here, not at the top: --help stays free of torch
        from ..sampling.distributed import resolve_device
        from .demo import DemoInterrupted, run_demo

        try:
            if resolve_device(args.device).type == "cpu":
                print(configure_torch_threads(), flush=True)
        except ValueError as error:  # no CUDA for --device cuda, no device at all, a bad DDPM_FAST_THREADS
            print(f"ddpm-fast demo: error: {error_text(error)}", file=sys.stderr)
            return 2
        try:
            run_demo(args.run_dir, steps=args.steps, batch_size=args.batch_size, timesteps=args.timesteps,
                     num_samples=args.num_samples, device=args.device, seed=args.seed,
                     progress=not args.no_progress, compile=False if args.no_compile else None)
        except DemoInterrupted as stopped:
            print(f"ddpm-fast demo: stopped: {stopped}", file=sys.stderr)
            return 128 + int(stopped.signal or signal.SIGINT)
        except ValueError as error:  # e.g. --run-dir holds a demo run of another setup (another device's plan)
            hint = "" if args.run_dir.is_file() else " (pass another --run-dir, or delete that folder)"
            print(f"ddpm-fast demo: error: {error_text(error)}{hint}", file=sys.stderr)
            return 2
    elif args.command == "train":
        return run_train(args)
    elif args.command in ("sample", "export"):
        run = run_sample_command if args.command == "sample" else run_export_command
        try:
            return run(command_parser, args)
        except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; files are written atomically, so none is half
            print(f"ddpm-fast {args.command}: stopped (Ctrl-C); nothing was written", file=sys.stderr)
            return 130
    elif args.command == "bench":
        return bench.run_command(command_parser, args)
    return 0


def _show_notes() -> None:
    """The package's INFO notes (such as "compiling the step ..." before a long torch.compile) on stderr, once, and
    its warnings as one line each ("ddpm-fast: warning: ..."), without the source line Python adds."""
    warnings.formatwarning = lambda message, category, *_, **__: f"ddpm-fast: warning: {message}\n"
    logger = logging.getLogger("ddpm_fast")
    if not any(getattr(handler, "_ddpm_fast_cli", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ddpm-fast: %(message)s"))
        handler._ddpm_fast_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
