"""Command line: `ddpm-fast <command>` (also `python -m ddpm_fast`).

    ddpm-fast train --run-dir runs/shapes --steps 2000
    ddpm-fast sample --checkpoint runs/shapes --num-samples 64 --out grid.png
    torchrun --nproc_per_node 4 -m ddpm_fast sample --diffusers ddpm-cifar10-32/ --out samples.safetensors
    ddpm-fast export --diffusers ddpm-cifar10-32/ --graph ddpm_step --out step.onnx
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time
import warnings

from ..vocabulary import (EXPORT_DTYPES, GRAPHS, METHODS, PREDICTION_TYPES, SAMPLER_DTYPES, SCHEDULES,
                          VARIANCE_TYPES)
from . import arguments, bench
from .threads import HELP_NOTE as THREADS_NOTE
from .threads import configure_torch_threads
from .train import add_train_parser, run_train

OUTPUT_SUFFIXES = (".png", ".safetensors")
IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what a PNG holds


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
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--seed", type=arguments.seed, default=0)
    demo.add_argument("--no-compile", action="store_true", help="FastSampler without torch.compile")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_train_parser(commands)
    _add_sample_parser(commands)
    _add_export_parser(commands)
    bench.add_bench_parser(commands)
    for command in commands.choices.values():  # every subcommand's --help shows its defaults
        arguments.show_defaults(command)
    parser.subcommands = dict(commands.choices)  # type: ignore[attr-defined]  # name -> its parser, for errors
    return parser


def _add_source_arguments(parser: argparse.ArgumentParser, diffusers_help: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=pathlib.Path, metavar="DIR",
                        help="a training run folder (its last good checkpoint), one checkpoint folder, a UNet.save "
                             "folder (config.json + model.safetensors [+ setup.json]) or a diffusers pipeline folder; "
                             "its stored setup (schedule, prediction type, ...) is used")
    source.add_argument("--diffusers", metavar="DIR|ID", help=diffusers_help)


def _add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The schedule, the step options and the weights: checked against the source's stored setup."""
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="the training schedule; only where the source stores none (default linear; 'linear' "
                             "scales β by 1000/T at any T, as training does)")
    parser.add_argument("--train-timesteps", type=arguments.positive_int, default=None,
                        help="T of --schedule (default: the stored T, else 1000)")
    parser.add_argument("--weights", choices=("ema", "model"), default=None,
                        help="a training checkpoint's EMA weights (its default) or its trained weights; other sources "
                             "hold one set of weights and take no --weights")
    _add_step_option_arguments(parser)
    parser.add_argument("--override-setup", action="store_true",
                        help="let --schedule and the step options replace the source's stored setup (without it, a "
                             "value that contradicts the stored one is an error)")


def _add_step_option_arguments(parser: argparse.ArgumentParser) -> None:
    """What the model predicts and how the DDPM step uses it: None (not given) leaves the stored setting."""
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=None,
                        help="what the model predicts (default: the stored one, else epsilon)")
    parser.add_argument("--variance-type", choices=VARIANCE_TYPES, default=None,
                        help="σ_t of the DDPM step (default: the stored one, else fixed_small)")
    parser.add_argument("--clip-sample", action=argparse.BooleanOptionalAction, default=None,
                        help="clamp the predicted x0 to [-1, 1] (default: the stored setting, else off)")
    parser.add_argument("--null-class-label", type=arguments.non_negative_int, default=None, metavar="K",
                        help="the class label meaning 'no class' to a class-conditional model, for classifier-free "
                             "guidance (default: the stored one; a --class-conditional run stores it, a diffusers "
                             "folder cannot)")


def _add_sample_parser(commands) -> None:
    sample = commands.add_parser(
        "sample", help="sample images from a checkpoint (also across processes under torchrun)",
        description="Sample from a UNet checkpoint or a diffusers DDPMPipeline folder and write a PNG grid or a "
                    "safetensors tensor. Under `torchrun --nproc_per_node N -m ddpm_fast sample ...` the batch is "
                    "split across the ranks (NCCL on GPUs, gloo on CPU) and rank 0 writes the whole of it: the "
                    "same samples as one process draws." + THREADS_NOTE)
    _add_source_arguments(sample, "a DDPMPipeline folder (unet/ + scheduler/; its scheduler config is the setup) or a "
                                  "Hugging Face Hub id (read through the local cache; HF_HUB_OFFLINE=1 works)")
    _add_setup_arguments(sample)
    sample.add_argument("--num-samples", type=arguments.positive_int, default=None,
                        help="how many samples (default: one per --class-labels entry, else 16)")
    sample.add_argument("--seed", type=arguments.seed, default=0,
                        help="the noise key; sample i draws the same noise at any batch size or world size")
    sample.add_argument("--steps", type=arguments.positive_int, default=None,
                        help="num_inference_steps (default: every training timestep)")
    sample.add_argument("--method", choices=METHODS, default="ddpm",
                        help="ddpm (ancestral), ddim, or DPM-Solver++ 2M (ODE) / its SDE variant, which need --steps "
                             "(10-25)")
    sample.add_argument("--eta", type=arguments.non_negative_float, default=0.0, help="DDIM's η (method ddim only)")
    sample.add_argument("--class-labels", type=arguments.class_labels, default=None, metavar="K[,K...]",
                        help="the class of each sample, for a class-conditional model (one value: every sample); "
                             "e.g. 3,3,5")
    sample.add_argument("--guidance-scale", type=arguments.finite_float, default=None, metavar="W",
                        help="classifier-free guidance: ε_uncond + W·(ε_cond − ε_uncond), one model call of 2B per "
                             "step (needs --class-labels and a model trained with --class-conditional; 1: the "
                             "conditional model, 0: the unconditional one)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (under torchrun, cuda is "
                                                         "cuda:LOCAL_RANK)")
    sample.add_argument("--dtype", choices=SAMPLER_DTYPES, default="auto",
                        help="the U-Net's compute dtype (auto: bfloat16 on CUDA, float32 on a CPU)")
    compiling = sample.add_mutually_exclusive_group()
    compiling.add_argument("--compile", action="store_true",
                           help="compile the step with torch.compile even for a short job on a CPU")
    compiling.add_argument("--no-compile", action="store_true",
                           help="run each step eagerly (no torch.compile); by default a GPU compiles, and a CPU "
                                "compiles only a job that would run a minute or more eagerly")
    sample.add_argument("--no-cuda-graphs", action="store_true", help="launch every step instead of replaying graphs")
    sample.add_argument("--out", type=pathlib.Path, default=pathlib.Path("samples.png"),
                        help="a .png (an image grid) or a .safetensors file (float32 [N, C, H, W] under 'images')")
    sample.add_argument("--progress", action="store_true", help="show a progress bar of the steps (rank 0)")


def _add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="write the U-Net, or one whole reverse step, as an ONNX file",
        description="Export a UNet checkpoint or a diffusers model to ONNX (opset 18, dynamic batch and, unless "
                    "--static-spatial, dynamic H and W in multiples of the U-Net's downsampling factor). --graph "
                    "model: inputs sample [B, C, H, W] and timestep [B] int64, output model_output. ddpm_step: "
                    "inputs sample (x_t), timestep, noise (float32), output prev_sample (x_{t-1}), the schedule "
                    "baked in. ddim_step: adds prev_timestep [B] int64 (-1 ends the chain). A class-conditional "
                    "model's graphs also take class_labels [B] int64, and its step graphs, when the setup names the "
                    "null class (a --class-conditional run), guidance_scale [1] float32 (classifier-free guidance: "
                    "one model call of 2B inside the graph; 1 is the conditional model). The source's stored setup "
                    "(β, prediction type, clipping, spacing, ...) is baked in and travels in the file's metadata, "
                    "so OnnxSampler samples what `ddpm-fast sample` samples from the same source.")
    _add_source_arguments(export, "a DDPMPipeline folder (unet/ + scheduler/: its scheduler config is the setup), a "
                                  "UNet2DModel folder (config.json + weights) or a Hugging Face Hub id")
    export.add_argument("--out", type=pathlib.Path, required=True, metavar="PATH.onnx",
                        help="the ONNX file to write (atomically: an existing file is replaced whole)")
    export.add_argument("--graph", choices=GRAPHS, default="model",
                        help="model: the U-Net alone; ddpm_step / ddim_step / dpm_solver_step: one reverse step "
                             "(DDPM, DDIM with --eta baked in, DPM-Solver++ ODE or SDE with the step's solver "
                             "coefficients as an input) (default model)")
    _add_setup_arguments(export)
    export.add_argument("--eta", type=arguments.non_negative_float, default=0.0, help="DDIM's η (--graph ddim_step only)")
    export.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                        help="the U-Net's weights and compute (a step graph still takes and returns float32 x_t)")
    export.add_argument("--static-spatial", action="store_true",
                        help="fix H and W at the model's sample size (the batch stays dynamic)")
    export.add_argument("--contrib-ops", action="store_true",
                        help="use ONNX Runtime's NHWC CUDA contrib ops (GroupNorm, SkipGroupNorm, NhwcConv): a file "
                             "for the CUDA provider only")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command_parser = parser.subcommands[args.command]  # its errors name the subcommand and point to its --help
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _show_notes()
    if args.command == "demo" and args.num_samples is not None and args.num_samples < 2:
        command_parser.error(f"--num-samples must be at least 2 (the quality figures compare sets of images), got "
                             f"{args.num_samples}")
    if args.command == "demo":
        from ..sampling.distributed import resolve_device
        from .demo import run_demo

        try:
            if resolve_device(args.device).type == "cpu":
                print(configure_torch_threads(), flush=True)
        except ValueError as error:  # no CUDA for --device cuda, no device at all, a bad DDPM_FAST_THREADS
            print(f"ddpm-fast demo: error: {error}", file=sys.stderr)
            return 2
        try:
            run_demo(args.run_dir, steps=args.steps, batch_size=args.batch_size, timesteps=args.timesteps,
                     num_samples=args.num_samples, device=args.device, seed=args.seed,
                     progress=not args.no_progress, compile=False if args.no_compile else None)
        except ValueError as error:  # e.g. --run-dir holds a demo run of another setup (another device's plan)
            hint = "" if args.run_dir.is_file() else " (pass another --run-dir, or delete that folder)"
            print(f"ddpm-fast demo: error: {error}{hint}", file=sys.stderr)
            return 2
    elif args.command == "train":
        return run_train(args)
    elif args.command == "sample":
        _check_sample_arguments(command_parser, args)
        try:
            return _run_sample(args)
        except (ValueError, FileNotFoundError) as error:  # bad paths or options: a message, not a traceback
            print(f"ddpm-fast sample: error: {_error_text(error)}", file=sys.stderr)
            return 2
    elif args.command == "export":
        _check_export_arguments(command_parser, args)
        try:
            return _run_export(args)
        except (ValueError, FileNotFoundError) as error:  # bad folders or options, as for sample
            print(f"ddpm-fast export: error: {_error_text(error)}", file=sys.stderr)
            return 2
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


def _check_output_path(parser: argparse.ArgumentParser, path: pathlib.Path) -> None:
    """--out must be a file path whose folder exists or can be made and written, found before any work."""
    if path.is_dir():
        parser.error(f"--out {path}: is a folder; expected a file path")
    existing = path.absolute().parent
    while not existing.exists():  # missing folders are made when the file is written
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"--out {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {path}: cannot write into {existing}")


def _check_source_folder(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.checkpoint is not None:
        flag, folder = "--checkpoint", args.checkpoint
    else:
        flag, folder = "--diffusers", pathlib.Path(args.diffusers)
        from ..interop.pretrained import looks_like_hub_id

        if not folder.exists() and looks_like_hub_id(args.diffusers):
            return  # resolved through huggingface_hub when the model loads
    if folder.is_file():
        parser.error(f"{flag} {folder}: is a file; expected a folder")
    if not folder.is_dir():
        parser.error(f"{flag} {folder}: no such folder")


# Each setup setting's flag, for errors that name what the user typed.
SETUP_FLAGS = {"schedule": "--schedule/--train-timesteps", "prediction_type": "--prediction-type",
               "variance_type": "--variance-type", "null_class_label": "--null-class-label"}


def _error_text(error: Exception) -> str:
    """An error's one line; a setup conflict names the flag, both values, and --override-setup."""
    from ..diffusion_setup import SetupConflict

    if not isinstance(error, SetupConflict):
        text = str(error)
        text = text.replace("needs num_inference_steps", "needs --steps")
        for name in ("class_labels", "guidance_scale"):  # the sampler's words for what the flags gave
            text = text.replace(f"{name}=", f"--{name.replace('_', '-')} ").replace(name, f"--{name.replace('_', '-')}")
        return text
    if error.name == "clip_sample":
        flag = "--clip-sample" if error.given else "--no-clip-sample"
    else:
        flag = f"{SETUP_FLAGS.get(error.name, error.name)} {error.given}"
    return (f"{flag} contradicts the {error.name} stored with {error.source} ({error.stored}); pass "
            "--override-setup to use it anyway")


def _load_source(args: argparse.Namespace):
    """(model, DiffusionSetup) of --checkpoint / --diffusers: the one loader, the stored setup checked against the
    flags (ddpm_fast.models.pretrained)."""
    from ..diffusion_setup import SetupConflict
    from ..interop.pretrained import load_pretrained, resolve_setup
    from ..schedule import NoiseSchedule

    pretrained = load_pretrained(args.checkpoint if args.checkpoint is not None else args.diffusers, args.weights)
    schedule, stored = None, pretrained.setup
    if args.schedule is None and args.train_timesteps is not None and stored is not None:
        # --train-timesteps alone: the stored T is fine; another T means the stored kind of schedule at that T
        if args.train_timesteps != stored.num_train_timesteps:
            if stored.schedule_name not in SCHEDULES:  # β stored as numbers, with no name to rebuild at another T
                if not args.override_setup:
                    raise SetupConflict("schedule", f"T={args.train_timesteps}", stored.describe_schedule(),
                                        pretrained.name)
                raise ValueError(f"--train-timesteps {args.train_timesteps} alone cannot rebuild the stored schedule "
                                 f"({stored.describe_schedule()}) at another T; give --schedule too")
            schedule = getattr(NoiseSchedule, stored.schedule_name)(args.train_timesteps)
    elif args.schedule is not None or args.train_timesteps is not None:
        total = args.train_timesteps or (stored.num_train_timesteps if stored is not None else 1000)
        schedule = getattr(NoiseSchedule, args.schedule or "linear")(total)
    given = {"schedule": schedule, "prediction_type": args.prediction_type, "variance_type": args.variance_type,
             "clip_sample": args.clip_sample, "null_class_label": args.null_class_label}
    return pretrained.model, resolve_setup(pretrained, given, override=args.override_setup)


# ------------------------------------------------------------------------------------------------------ sample


def _check_sample_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Path and option checks that need no model: they fail at once, on every rank alike."""
    _check_source_folder(parser, args)
    if args.out.suffix.lower() not in OUTPUT_SUFFIXES:
        parser.error(f"--out {args.out}: expected a .png or .safetensors path")
    _check_output_path(parser, args.out)
    if args.method != "ddim" and args.eta != 0.0:
        parser.error("--eta applies to --method ddim only")
    labels = args.class_labels
    if args.num_samples is None:
        args.num_samples = len(labels) if labels is not None else 16
    if labels is not None and len(labels) not in (1, args.num_samples):
        parser.error(f"--class-labels has {len(labels)} labels for --num-samples {args.num_samples}: give one per "
                     "sample, or one for all")
    if labels is not None and len(labels) == 1:
        args.class_labels = labels * args.num_samples
    if args.guidance_scale is not None and labels is None:
        parser.error("--guidance-scale needs --class-labels (guidance steers towards a class)")


def _run_sample(args: argparse.Namespace) -> int:
    from ..sampling.distributed import init_from_environment, sample_sharded, teardown

    rank, world_size, device = init_from_environment(args.device)
    try:
        if device.type == "cpu":
            threads = configure_torch_threads()
            if rank == 0:
                print(threads, flush=True)
        sampler = _build_sampler(args, device)
        if args.out.suffix.lower() == ".png" and sampler.sample_shape[0] not in IMAGE_CHANNELS:
            raise ValueError(f"--out {args.out}: a PNG holds 1, 3 or 4 channels; this model samples "
                             f"{sampler.sample_shape[0]}, write a .safetensors file instead")
        start = time.perf_counter()
        images = sample_sharded(sampler, args.num_samples, seed=args.seed, num_inference_steps=args.steps,
                                method=args.method, eta=args.eta, progress=args.progress and rank == 0,
                                class_labels=args.class_labels, guidance_scale=args.guidance_scale)
        if rank == 0:
            images = images.cpu()  # also waits for the device
            _write_samples(args.out, images, _metadata(args))
            wall_seconds = time.perf_counter() - start
            report = sampler.last_report
            shard = f"; {report.batch_size} of them on rank 0" if world_size > 1 else ""
            decision = report.compile_decision.replace("(compile=True forces it)", "(--compile forces it)")
            print(f"wrote {args.out}: {args.num_samples} samples {tuple(images.shape[1:])}, world size {world_size}"
                  f"{shard}, {report.num_steps} {report.method} steps in {report.sampling_seconds:.2f} s (setup "
                  f"{report.setup_seconds:.2f} s: layout, warm-up, compile or graph capture; {decision}; "
                  f"{f'{report.graph_replays} CUDA-graph replays' if report.cuda_graphs else 'no CUDA graphs'}); "
                  f"{wall_seconds:.2f} s from the sampling call, setup included, to the file written", flush=True)
            for reason in report.fallbacks:
                print(f"fast path fell back: {reason}", file=sys.stderr)
    finally:
        teardown()
    return 0


def _build_sampler(args: argparse.Namespace, device):
    import torch

    from ..sampling.sampler import FastSampler

    model, setup = _load_source(args)
    return FastSampler(model, setup.schedule(), setup.sample_shape, **setup.sampler_options(), device=device,
                       dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
                       compile=False if args.no_compile else (True if args.compile else None),
                       cuda_graphs=False if args.no_cuda_graphs else None)


def _metadata(args: argparse.Namespace) -> dict[str, str]:
    source = args.checkpoint if args.checkpoint is not None else args.diffusers
    metadata = {"format": "ddpm_fast.samples", "source": str(source), "seed": str(args.seed),
                "method": args.method, "num_inference_steps": str(args.steps or "all"), "eta": str(args.eta)}
    if args.class_labels is not None:
        metadata["class_labels"] = ",".join(map(str, args.class_labels))
        metadata["guidance_scale"] = str(args.guidance_scale if args.guidance_scale is not None else 1.0)
    return metadata


def _write_samples(path: pathlib.Path, images, metadata: dict[str, str]) -> None:
    """float32 [N, C, H, W] in [-1, 1] → a PNG grid or a safetensors file, written atomically."""
    from .. import files
    from ..data.images import save_grid

    if path.suffix.lower() == ".safetensors":
        files.save_tensors(path, {"images": images.float().contiguous()}, metadata=metadata)
    else:
        save_grid(path, images)


# ------------------------------------------------------------------------------------------------------ export


def _check_export_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    _check_source_folder(parser, args)
    if args.out.suffix.lower() != ".onnx":
        parser.error(f"--out {args.out}: expected a .onnx path")
    _check_output_path(parser, args.out)
    if args.graph != "ddim_step" and args.eta != 0.0:
        parser.error("--eta applies to --graph ddim_step only")


def _run_export(args: argparse.Namespace) -> int:
    import torch

    from ..export import export_onnx
    from ..export.onnx_export import OPSET, OUTPUT_NAMES, input_names

    model, setup = _load_source(args)
    # torch's exporter warns about its own internals (pytree's LeafSpec); not the user's business on the CLI
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    path = export_onnx(model, args.out, graph=args.graph, setup=setup, eta=args.eta, dtype=getattr(torch, args.dtype),
                       dynamic_spatial=False if args.static_spatial else None, contrib_ops=args.contrib_ops)
    spatial = "static H, W" if args.static_spatial else "dynamic H, W"
    if args.contrib_ops:
        spatial += ", CUDA contrib ops"
    names = input_names(args.graph, setup.num_class_embeds is not None, setup.null_class_label is not None)
    print(f"wrote {path}: {args.graph} graph ({', '.join(names)} -> "
          f"{', '.join(OUTPUT_NAMES[args.graph])}), {args.dtype}, opset {OPSET}, dynamic batch, {spatial}; setup: "
          f"{setup.describe_schedule()}, {setup.prediction_type}, {setup.variance_type}, clip_sample "
          f"{setup.clip_sample}, {setup.timestep_spacing} spacing", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
