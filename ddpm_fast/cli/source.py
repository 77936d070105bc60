"""What `sample` and `export` share: the source arguments (--checkpoint / --diffusers) and the setup flags, their
checks before any work, and the one loader that reads the source and checks the flags against its stored setup."""

from __future__ import annotations

import argparse
import os
import pathlib

from ..vocabulary import (FINAL_SIGMAS_TYPES, PREDICTION_TYPES, SCHEDULES, SIGMA_SPACINGS, SOLVER_ORDERS,
                          UNIPC_SOLVER_TYPES, VARIANCE_TYPES)
from . import arguments


def add_source_arguments(parser: argparse.ArgumentParser, diffusers_help: str, package_help: str = "") -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=pathlib.Path, metavar="DIR" + ("|FILE.pt2" if package_help else ""),
                        help="a training run folder (its last good checkpoint), one checkpoint folder, a UNet.save "
                             "folder (config.json + model.safetensors [+ setup.json]) or a diffusers pipeline folder; "
                             "its stored setup (schedule, prediction type, ...) is used" + package_help)
    source.add_argument("--diffusers", metavar="DIR|ID", help=diffusers_help)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The schedule, the step options and the weights: checked against the source's stored setup."""
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="the training schedule; only where the source stores none (default linear; 'linear' "
                             "scales β by 1000/T at any T, as training does)")
    parser.add_argument("--train-timesteps", type=arguments.positive_int, default=None,
                        help="T of --schedule (default: the stored T, else 1000)")
    parser.add_argument("--weights", choices=("ema", "model"), default=None,
                        help="a training checkpoint's EMA weights (its default) or its trained weights; other sources "
                             "hold one set of weights and take no --weights")
    add_step_option_arguments(parser)
    parser.add_argument("--override-setup", action="store_true",
                        help="let --schedule and the step options replace the source's stored setup (without it, a "
                             "value that contradicts the stored one is an error)")


def add_step_option_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_solver_arguments(parser)


# The multistep solvers' boolean options and their flags (--use-karras-sigmas / --no-use-karras-sigmas, ...).
SOLVER_SWITCHES = ("lower_order_final", "euler_at_final") + SIGMA_SPACINGS + ("thresholding",)


def add_solver_arguments(parser: argparse.ArgumentParser) -> None:
    """The multistep solvers' options (--method dpm_solver++ / sde_dpm_solver++ / unipc), diffusers'
    DPMSolverMultistepScheduler and UniPCMultistepScheduler names as flags: None (not given) leaves the stored
    setting."""
    parser.add_argument("--solver-order", type=int, choices=SOLVER_ORDERS, default=None,
                        help="the multistep order of DPM-Solver++ (2: 2M, 3: 3M) and UniPC: 1, 2 or 3 (default: the "
                             "stored one, else 2)")
    parser.add_argument("--final-sigmas-type", choices=FINAL_SIGMAS_TYPES, default=None,
                        help="where a DPM-Solver++ or UniPC chain ends: zero (σ = 0, its last step first order) or "
                             "sigma_min (the schedule's σ at t = 0) (default: the stored one, else zero)")
    parser.add_argument("--solver-type", choices=UNIPC_SOLVER_TYPES, default=None,
                        help="UniPC's B(h), Zhao et al.'s two choices: bh1 (B(h) = h) or bh2 (B(h) = e^h − 1) "
                             "(default: the stored one, else bh2)")
    parser.add_argument("--disable-corrector", type=arguments.step_indices, default=None, metavar="I[,I...]",
                        help="UniPC: the step indices after which its corrector is skipped, e.g. 0,1 (default: the "
                             "stored ones, else none)")
    helps = {
        "lower_order_final": "lower orders at the end of a chain: DPM-Solver++, first order on the last step of a "
                             "chain under 15 steps; UniPC, order ≤ steps left (default: the stored setting, else on)",
        "euler_at_final": "first order on the last DPM-Solver++ step of any chain (default: the stored setting, else "
                          "off)",
        "use_karras_sigmas": "DPM-Solver++ and UniPC step on Karras et al.'s σ (ρ = 7), the model at the nearest "
                             "timestep (default: the stored setting, else off)",
        "use_lu_lambdas": "DPM-Solver++ and UniPC step uniform in λ (Lu et al. 2022), the model at the nearest "
                          "timestep (default: the stored setting, else off)",
        "use_exponential_sigmas": "DPM-Solver++ and UniPC step uniform in log σ, the model at the timestep below "
                                  "(default: the stored setting, else off)",
        "thresholding": "dynamic thresholding of each DPM-Solver++ or UniPC step's x0 (Saharia et al. 2022) "
                        "(default: the stored setting, else off)",
    }
    for name in SOLVER_SWITCHES:
        parser.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None,
                            help=helps[name])
    parser.add_argument("--dynamic-thresholding-ratio", type=arguments.quantile, default=None, metavar="Q",
                        help="with --thresholding: the quantile of |x0| per sample that sets its threshold (default: "
                             "the stored one, else 0.995)")
    parser.add_argument("--sample-max-value", type=arguments.positive_float, default=None, metavar="S",
                        help="with --thresholding: the largest threshold (default: the stored one, else 1.0)")


def solver_given(args: argparse.Namespace) -> dict:
    """The multistep solvers' options the flags give (None: not given)."""
    return {"solver_order": args.solver_order, "final_sigmas_type": args.final_sigmas_type,
            "dynamic_thresholding_ratio": args.dynamic_thresholding_ratio, "sample_max_value": args.sample_max_value,
            "solver_type": args.solver_type, "disable_corrector": args.disable_corrector,
            **{name: getattr(args, name) for name in SOLVER_SWITCHES}}


def check_output_path(parser: argparse.ArgumentParser, path: pathlib.Path) -> None:
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


def check_source_folder(parser: argparse.ArgumentParser, args: argparse.Namespace, package: bool = False) -> None:
    """--checkpoint / --diffusers name a folder (or a Hub id) that exists; with package=True --checkpoint may also
    name a pt2 package file."""
    if args.checkpoint is not None:
        flag, folder = "--checkpoint", args.checkpoint
        if package and folder.suffix.lower() == ".pt2" and not folder.is_dir():
            if not folder.is_file():
                parser.error(f"--checkpoint {folder}: no such file")
            return
    else:
        flag, folder = "--diffusers", pathlib.Path(args.diffusers)
        from ..interop.pretrained import looks_like_hub_id  # here: --help stays free of torch

        if not folder.exists() and looks_like_hub_id(args.diffusers):
            return  # resolved through huggingface_hub when the model loads
    if folder.is_file():
        parser.error(f"{flag} {folder}: is a file; expected a folder")
    if not folder.is_dir():
        parser.error(f"{flag} {folder}: no such folder")


def load_source(args: argparse.Namespace, require_stored: bool = False):
    """(model, DiffusionSetup) of --checkpoint / --diffusers: the one loader, the stored setup checked against the
    flags (ddpm_fast.interop.pretrained). require_stored: a source that stores no setup is a ValueError (instead of
    the defaults, said in a warning)."""
    # imported here, not at the top: the parsers import this module, and --help stays free of torch
    from ..diffusion_setup import SetupConflict
    from ..interop.pretrained import load_pretrained, require_stored_setup, resolve_setup
    from ..schedule import NoiseSchedule

    pretrained = load_pretrained(args.checkpoint if args.checkpoint is not None else args.diffusers, args.weights)
    schedule, stored = None, pretrained.setup
    if require_stored:
        require_stored_setup(pretrained)
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
             "clip_sample": args.clip_sample, "null_class_label": args.null_class_label, **solver_given(args)}
    return pretrained.model, resolve_setup(pretrained, given, override=args.override_setup)
