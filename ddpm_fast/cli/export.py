"""`ddpm-fast export`: write a checkpoint's or a diffusers model's U-Net, or one whole reverse step, as an ONNX file
with its setup in the metadata."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ..vocabulary import EXPORT_DTYPES, GRAPHS
from . import arguments, source
from .flags import error_text


def add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="write the U-Net, or one whole reverse step, as an ONNX file",
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
                    "so OnnxSampler samples what `ddpm-fast sample` samples from the same source.")
    source.add_source_arguments(export, "a DDPMPipeline folder (unet/ + scheduler/: its scheduler config is the "
                                        "setup), a UNet2DModel folder (config.json + weights) or a Hugging Face Hub "
                                        "id")
    export.add_argument("--out", type=pathlib.Path, required=True, metavar="PATH.onnx",
                        help="the ONNX file to write, a name ending in .onnx (atomically: an existing file is replaced "
                             "whole; missing folders are made)")
    export.add_argument("--graph", choices=GRAPHS, default="model",
                        help="model: the U-Net alone; ddpm_step / ddim_step / dpm_solver_step / unipc_step: one "
                             "reverse step (DDPM, DDIM with --eta baked in, DPM-Solver++ ODE or SDE, UniPC: the "
                             "multistep solvers with the step's coefficients as an input) (default model)")
    source.add_setup_arguments(export)
    export.add_argument("--eta", type=arguments.non_negative_float, default=0.0,
                        help="DDIM's η (--graph ddim_step only)")
    export.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                        help="the U-Net's weights and compute (a step graph still takes and returns float32 x_t)")
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
    source.check_source_folder(parser, args)
    if args.out.suffix.lower() != ".onnx":
        parser.error(f"--out {args.out}: expected a .onnx path")
    source.check_output_path(parser, args.out)
    if args.graph != "ddim_step" and args.eta != 0.0:
        parser.error("--eta applies to --graph ddim_step only")


def _run_export(args: argparse.Namespace) -> int:
    # imported here, not at the top: the parser imports this module, and --help stays free of torch
    import torch

    from ..export import export_onnx
    from ..export.onnx_export import OPSET, OUTPUT_NAMES, input_names

    model, setup = source.load_source(args)  # the exporter itself keeps torch's notes on its internals quiet
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
