"""`ddpm-fast sample`: sample a checkpoint or a diffusers pipeline, in one process or across torchrun's ranks, and
write a PNG grid or a safetensors tensor."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from ..vocabulary import METHODS, SAMPLER_DTYPES
from . import arguments, source
from .flags import error_text, flag_of
from .threads import HELP_NOTE as THREADS_NOTE
from .threads import configure_torch_threads

OUTPUT_SUFFIXES = (".png", ".safetensors")
IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what a PNG holds


def add_sample_parser(commands) -> None:
    sample = commands.add_parser(
        "sample", help="sample images from a checkpoint (also across processes under torchrun)",
        description="Sample from a UNet checkpoint or a diffusers DDPMPipeline folder and write a PNG grid or a "
                    "safetensors tensor. Under `torchrun --nproc_per_node N -m ddpm_fast sample ...` the batch is "
                    "split across the ranks (NCCL on GPUs, gloo on CPU) and rank 0 writes the whole of it: the "
                    "same samples as one process draws." + THREADS_NOTE)
    source.add_source_arguments(sample, "a DDPMPipeline folder (unet/ + scheduler/; its scheduler config is the setup) "
                                        "or a Hugging Face Hub id (read through the local cache; HF_HUB_OFFLINE=1 "
                                        "works)",
                                package_help="; or a pt2 package (`ddpm-fast export --format pt2`): the U-Net "
                                             "compiled ahead of time, sampled without compiling, on the device and in "
                                             "the dtype it was compiled for")
    source.add_setup_arguments(sample)
    sample.add_argument("--num-samples", type=arguments.positive_int, default=None,
                        help="how many samples (default: one per --class-labels entry, else 16)")
    sample.add_argument("--seed", type=arguments.seed, default=0,
                        help="the noise key; sample i draws the same noise at any batch size or world size")
    sample.add_argument("--steps", type=arguments.positive_int, default=None,
                        help="num_inference_steps (default: every training timestep)")
    sample.add_argument("--method", choices=METHODS, default="ddpm",
                        help="ddpm (ancestral), ddim, DPM-Solver++ 2M (ODE) / its SDE variant, or UniPC; the last "
                             "three need --steps (5-25)")
    sample.add_argument("--eta", type=arguments.non_negative_float, default=0.0, help="DDIM's η (method ddim only)")
    sample.add_argument("--class-labels", type=arguments.class_labels, default=None, metavar="K[,K...]",
                        help="the class of each sample, for a class-conditional model (one value: every sample): an "
                             "index below the model's class count, or a class name stored with the model (a "
                             "--class-conditional run stores its dataset's: CIFAR-10's classes, an image folder's "
                             "sub-folders); e.g. 3,3,5 or cat,cat,dog. A PNG grid of several classes has a row per "
                             "class, named")
    sample.add_argument("--guidance-scale", type=arguments.finite_float, default=None, metavar="W",
                        help="classifier-free guidance: ε_uncond + W·(ε_cond − ε_uncond), one model call of 2B per "
                             "step (needs --class-labels and a model trained with --class-conditional; 1: the "
                             "conditional model, 0: the unconditional one)")
    sample.add_argument("--device", type=arguments.device, default="auto",
                        help="auto, cpu, cuda or cuda:N (under torchrun, cuda is cuda:LOCAL_RANK)")
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


def run_sample_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check the arguments (usage errors exit 2 through the parser), then sample; a bad path or option is one line
    on stderr and exit status 2."""
    _check_sample_arguments(parser, args)
    try:
        return _run_sample(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad paths or options: a message, not a traceback
        print(f"ddpm-fast sample: error: {error_text(error)}", file=sys.stderr)
        return 2


def _check_sample_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Path and option checks that need no model: they fail at once, on every rank alike."""
    source.check_source_folder(parser, args, package=True)
    if args.out.suffix.lower() not in OUTPUT_SUFFIXES:
        parser.error(f"--out {args.out}: expected a .png or .safetensors path")
    source.check_output_path(parser, args.out)
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
    # imported here, not at the top: the parser imports this module, and --help stays free of torch
    from ..sampling.distributed import init_from_environment, sample_sharded, teardown

    if args.device == "auto" and args.checkpoint is not None and args.checkpoint.is_file():
        from ..models.pt2_package import check_pt2_compatible, read_pt2_metadata

        # a package runs where it was compiled for (checked here: a CUDA package without CUDA says so)
        args.device = check_pt2_compatible(read_pt2_metadata(args.checkpoint), args.checkpoint).type
    rank, world_size, device = init_from_environment(args.device)
    try:
        if device.type == "cpu":
            threads = configure_torch_threads()
            if rank == 0:
                print(threads, flush=True)
        sampler, setup = _build_sampler(args, device)
        if args.class_labels is not None:  # names, as the setup stores them, become indices
            args.class_labels = setup.class_indices(_numbers_as_names(args.class_labels, setup.class_names))
        if args.out.suffix.lower() == ".png" and sampler.sample_shape[0] not in IMAGE_CHANNELS:
            raise ValueError(f"--out {args.out}: a PNG holds 1, 3 or 4 channels; this model samples "
                             f"{sampler.sample_shape[0]}, write a .safetensors file instead")
        start = time.perf_counter()
        images = sample_sharded(sampler, args.num_samples, seed=args.seed, num_inference_steps=args.steps,
                                method=args.method, eta=args.eta, progress=args.progress and rank == 0,
                                class_labels=args.class_labels, guidance_scale=args.guidance_scale)
        if rank == 0:
            images = images.cpu()  # also waits for the device
            _write_samples(args.out, images, _metadata(args), args.class_labels, setup.class_names)
            wall_seconds = time.perf_counter() - start
            report = sampler.last_report
            shard = f"; {report.batch_size} of them on rank 0" if world_size > 1 else ""
            decision = report.describe_compile_decision(flag_of)
            noun = "sample" if args.num_samples == 1 else "samples"
            print(f"wrote {args.out}: {args.num_samples} {noun} {tuple(images.shape[1:])}, world size {world_size}"
                  f"{shard}, {report.num_steps} {report.method} steps in {report.sampling_seconds:.2f} s (setup "
                  f"{report.setup_seconds:.2f} s: layout, warm-up, compile or graph capture; {decision}; "
                  f"{f'{report.graph_replays} CUDA-graph replays' if report.cuda_graphs else 'no CUDA graphs'}); "
                  f"{wall_seconds:.2f} s from the sampling call, setup included, to the file written", flush=True)
        # Every rank's own: a fast path can fail on one rank alone (its GPU, its compile), and rank 0's report
        # cannot say so.
        for line in fallback_lines(sampler.last_report.fallbacks, rank, world_size):
            print(line, file=sys.stderr, flush=True)
    finally:
        teardown()
    return 0


def fallback_lines(fallbacks: tuple[str, ...], rank: int, world_size: int) -> list[str]:
    """The stderr lines of one rank's fast-path fallbacks ("rank 1 of 2: " in front under several ranks)."""
    where = f"rank {rank} of {world_size}: " if world_size > 1 else ""
    return [f"{where}fast path fell back: {reason}" for reason in fallbacks]


def _build_sampler(args: argparse.Namespace, device):
    import torch  # here: --help stays free of torch

    from ..sampling.sampler import FastSampler

    model, setup = source.load_source(args)
    sampler = FastSampler(model, setup.schedule(), setup.sample_shape, **setup.sampler_options(), device=device,
                          dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
                          compile=False if args.no_compile else (True if args.compile else None),
                          cuda_graphs=False if args.no_cuda_graphs else None)
    return sampler, setup


def _metadata(args: argparse.Namespace) -> dict[str, str]:
    source = args.checkpoint if args.checkpoint is not None else args.diffusers
    metadata = {"format": "ddpm_fast.samples", "source": str(source), "seed": str(args.seed),
                "method": args.method, "num_inference_steps": str(args.steps or "all"), "eta": str(args.eta)}
    if args.class_labels is not None:
        metadata["class_labels"] = ",".join(map(str, args.class_labels))
        metadata["guidance_scale"] = str(args.guidance_scale if args.guidance_scale is not None else 1.0)
    return metadata


def _numbers_as_names(labels: list, class_names) -> list:
    """Where the classes are named by numbers (image folders 3/, 7/, 9/), a number given is a class name, never an
    index: "7" is the class 7, not the eighth (ValueError for a number that names no class)."""
    if not class_names or not any(name.isdecimal() for name in class_names):
        return labels
    unknown = [label for label in labels if isinstance(label, int) and str(label) not in class_names]
    if unknown:
        raise ValueError(f"--class-labels {unknown[0]}: this model's classes are named by numbers "
                         f"({', '.join(class_names)}), so a number is read as a class name, and {unknown[0]} is none "
                         "of them")
    return [str(label) if isinstance(label, int) else label for label in labels]


def _write_samples(path: pathlib.Path, images, metadata: dict[str, str], labels=None, class_names=None) -> None:
    """float32 [N, C, H, W] in [-1, 1] → a PNG grid (one named row per class when `labels` hold several) or a
    safetensors file, written atomically."""
    from .. import files  # here: --help stays free of torch
    from ..data.images import save_grid

    if path.suffix.lower() == ".safetensors":
        files.save_tensors(path, {"images": images.float().contiguous()}, metadata=metadata)
    else:
        save_grid(path, images, labels=labels, class_names=class_names)
