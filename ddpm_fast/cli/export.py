"""`ddpm-fast export`: write a checkpoint's or a diffusers model's U-Net, or one whole reverse step, as an ONNX file
with its setup in the metadata; or the U-Net compiled ahead of time as a pt2 package (--format pt2)."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ..vocabulary import EXPORT_DTYPES, EXPORT_FORMATS, GRAPHS, PT2_DTYPES
from . import arguments, source
from .flags import error_text


def add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="write the U-Net, or one whole reverse step, as an ONNX file; or a compiled pt2 package",
        description="Export a UNet checkpoint or a diffusers model to ONNX (opset 18, dynamic batch and, unless "
                    "--static-spatial, dynamic H and W in multiples of the U-Net's downsampling factor). --graph "
                    "model: inputs sample [B, C, H, W] and timestep [B] int64, output model_output. ddpm_step: "
                    "inputs sample (x_t), timestep, noise (float32), output prev_sample (x_{t-1}), the schedule "
                    "baked in. ddim_step: adds prev_timestep [B] int64 (-1 ends the chain). dpm_solver_step: inputs "
                    "sample, timestep, solver_coefficients [6] (the step's column of the chain's table), "
                    "prev_pred_original_sample, noise; outputs prev_sample, pred_original_sample. unipc_step: inputs "
                    "sample, timestep, unipc_coefficients [14], last_sample, prev_pred_original_sample(_2, _3); "
                    "outputs prev_sample, corrected_sample, pred_original_sample (OnnxSampler computes the columns "
                    "for any number of steps). A class-conditional "
                    "model's graphs also take class_labels [B] int64, and its step graphs, when the setup names the "
                    "null class (a --class-conditional run), guidance_scale [1] float32 (classifier-free guidance: "
                    "one model call of 2B inside the graph; 1 is the conditional model). The source's stored setup "
                    "(β, prediction type, clipping, spacing, ...) is baked in and travels in the file's metadata, "
                    "so OnnxSampler samples what `ddpm-fast sample` samples from the same source. --format pt2: "
                    "the U-Net compiled ahead of time by AOTInductor for one device (--device) and dtype, the batch "
                    "dynamic, with the setup stored; `ddpm-fast sample --checkpoint FILE.pt2` and "
                    "FastSampler.from_pretrained then sample at compiled speed without compiling, under the same "
                    "torch version, on a machine of the same kind.")
    source.add_source_arguments(export, "a DDPMPipeline folder (unet/ + scheduler/: its scheduler config is the "
                                        "setup), a UNet2DModel folder (config.json + weights) or a Hugging Face Hub "
                                        "id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                        help="onnx: an ONNX file (the flags below); pt2: a compiled package of the U-Net "
                             "(--device, --dtype) (default onnx)")
    export.add_argument("--out", type=pathlib.Path, required=True, metavar="PATH.onnx|PATH.pt2",
                        help="the file to write, a name ending in .onnx (.pt2 with --format pt2) (atomically: an "
                             "existing file is replaced whole; missing folders are made)")
    export.add_argument("--graph", choices=GRAPHS, default="model",
                        help="model: the U-Net alone; ddpm_step / ddim_step / dpm_solver_step / unipc_step: one "
                             "reverse step (DDPM, DDIM with --eta baked in, DPM-Solver++ ODE or SDE, UniPC: the "
                             "multistep solvers with the step's coefficients as an input) (default model)")
    source.add_setup_arguments(export)
    export.add_argument("--eta", type=arguments.non_negative_float, default=0.0,
                        help="DDIM's η (--graph ddim_step only)")
    export.add_argument("--dtype", choices=tuple(dict.fromkeys(EXPORT_DTYPES + PT2_DTYPES)), default="float32",
                        help="the U-Net's weights and compute (a step graph still takes and returns float32 x_t); "
                             "bfloat16 for --format pt2 only")
    export.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="--format pt2: the device the package's code is compiled for (default cpu: this "
                             "machine's CPU and its instruction sets)")
    export.add_argument("--static-spatial", action="store_true",
                        help="fix H and W at the model's sample size (the batch stays dynamic)")
    export.add_argument("--contrib-ops", action="store_true",
                        help="use ONNX Runtime's NHWC CUDA contrib ops (GroupNorm, SkipGroupNorm, NhwcConv): a file "
                             "for the CUDA provider only")


def run_export_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check the arguments (usage errors exit 2 through the parser), then export; a bad folder or option is one
    line on stderr and exit status 2."""
    _check_export_arguments(parser, args)
    try:
        return _run_export(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad folders or options, as for sample
        print(f"ddpm-fast export: error: {error_text(error)}", file=sys.stderr)
        return 2


def _check_export_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.checkpoint is not None and args.checkpoint.suffix.lower() == ".pt2":
        parser.error(f"--checkpoint {args.checkpoint}: a pt2 package holds compiled code, not weights to export; "
                     "use the run or model folder it was exported from")
    source.check_source_folder(parser, args)
    if args.out.suffix.lower() != f".{args.format}":
        parser.error(f"--out {args.out}: expected a .{args.format} path for --format {args.format}")
    source.check_output_path(parser, args.out)
    if args.format == "pt2":
        onnx_only = {"--graph": (args.graph != "model", "a pt2 package is the U-Net alone"),
                     "--eta": (args.eta != 0.0, "a pt2 package is the U-Net alone; pass --eta to sample"),
                     "--static-spatial": (args.static_spatial, "a pt2 package's H and W are always fixed"),
                     "--contrib-ops": (args.contrib_ops, "ONNX Runtime's ops")}
        for flag, (given, why) in onnx_only.items():
            if given:
                parser.error(f"{flag} applies to --format onnx only ({why})")
        return
    if args.device is not None:
        parser.error("--device applies to --format pt2 only (an ONNX file runs on any device)")
    if args.dtype not in EXPORT_DTYPES:
        parser.error(f"--dtype {args.dtype}: an ONNX file takes {' or '.join(EXPORT_DTYPES)}")
    if args.graph != "ddim_step" and args.eta != 0.0:
        parser.error("--eta applies to --graph ddim_step only")


def _run_export(args: argparse.Namespace) -> int:
    # imported here, not at the top: the parser imports this module, and --help stays free of torch
    import torch

    from ..export import export_onnx
    from ..export.onnx_export import OPSET, OUTPUT_NAMES, input_names

    # the exporter itself keeps torch's notes on its internals quiet; a package stores the source's own setup
    model, setup = source.load_source(args, require_stored=args.format == "pt2")
    if args.format == "pt2":
        return _run_pt2_export(args, model, setup)
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


def _run_pt2_export(args: argparse.Namespace, model, setup) -> int:
    import torch  # here, as above

    from ..export.pt2_export import export_pt2

    device = args.device or "cpu"
    print(f"compiling the U-Net for {device} in {args.dtype} (AOTInductor; a while: about 30 s for a small U-Net on "
          "a CPU)", flush=True)
    path = export_pt2(model, args.out, device=device, dtype=getattr(torch, args.dtype), setup=setup)
    shape = ", ".join(map(str, setup.sample_shape))
    print(f"wrote {path}: the U-Net compiled for {device}, {args.dtype}, samples [B, {shape}] "
          f"(dynamic batch), torch {torch.__version__}; setup: {setup.describe_schedule()}, {setup.prediction_type}, "
          f"{setup.variance_type}, clip_sample {setup.clip_sample}, {setup.timestep_spacing} spacing", flush=True)
    return 0
