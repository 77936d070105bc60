"""`ddpm-fast train`: the Trainer from the command line, in one process or under torchrun.

    ddpm-fast train --run-dir runs/shapes --steps 2000                # the embedded shapes dataset
    ddpm-fast train --run-dir runs/cifar --data cifar-10-batches-py/ --model ddpm-cifar10 --batch-size 128
    ddpm-fast train --run-dir runs/shapes --steps 4000 --resume       # continue: the run's stored setup, to step 4000
    ddpm-fast train --run-dir runs/classes --class-conditional        # for sample --class-labels --guidance-scale
    torchrun --nproc_per_node 8 -m ddpm_fast train --run-dir runs/cifar --data ... --batch-size 1024
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys

from ..training.config import TrainingConfig
from ..vocabulary import PREDICTION_TYPES, SCHEDULES, TRAINED_VARIANCE_TYPES, TRAINING_DTYPES
from . import arguments
from .flags import error_text
from .threads import HELP_NOTE as THREADS_NOTE
from .threads import configure_torch_threads

CHECKPOINTS_DIR = "checkpoints"  # models/checkpoints.py's name (imported with torch, so not from there)


def add_train_parser(commands) -> None:
    defaults = TrainingConfig()
    train = commands.add_parser(
        "train", help="train a DDPM U-Net (checkpoints, --resume, torchrun for several processes)",
        description="Train a U-Net with the DDPM objective. Checkpoints (safetensors + JSON) go to RUN_DIR/checkpoints "
                    "every --checkpoint-every steps and at the end (also on Ctrl-C / SIGTERM, which exit 130 / 143); "
                    "--resume continues from the last good one, from any directory (the run stores its data's path "
                    "and classes). Under `torchrun --nproc_per_node N -m ddpm_fast train ...` the global "
                    "batch is split across the ranks (DDP: NCCL on GPUs, gloo on CPU); rank 0 writes the files."
                    + THREADS_NOTE)
    train.add_argument("--run-dir", type=pathlib.Path, required=True, metavar="DIR",
                       help="where checkpoints, log.jsonl, loss.png and sample grids go")
    train.add_argument("--resume", action="store_true",
                       help="continue from RUN_DIR's last good checkpoint, with the setup stored there (image size, "
                            "schedule, batch size, data, ...): flags may repeat it, not contradict it; --steps and "
                            "the checkpoint, log and sample flags may change")
    train.add_argument("--data", default=defaults.data,
                       help="'shapes' (embedded, generated), an image folder, a .npz file or a CIFAR-10 python folder")
    train.add_argument("--key", dest="data_key", default=None, metavar="NAME",
                       help="the array of a .npz file that holds the images (needed when the file holds several)")
    train.add_argument("--data-range", type=arguments.value_range, default=None, metavar="LOW,HIGH",
                       help="the range a .npz file's float images lie in, mapped onto [-1, 1]: 0,1 for [0, 1] images "
                            "(what image libraries and ToTensor give); stored with the run (default: [-1, 1], and "
                            "an array lying wholly in [0, 1] is refused rather than taken as [-1, 1])")
    train.add_argument("--skip-unreadable", action="store_true",
                       help="leave out the images of an image folder that cannot be decoded (counted in log.jsonl) "
                            "instead of stopping before training")
    train.add_argument("--image-size", type=arguments.positive_int, default=defaults.image_size)
    train.add_argument("--model", default=defaults.model, help="a UNet preset: tiny, ddpm-cifar10, ddpm-256")
    train.add_argument("--steps", type=arguments.positive_int, default=defaults.steps, help="train up to this step")
    train.add_argument("--batch-size", type=arguments.positive_int, default=defaults.batch_size,
                       help="the global batch (split across torchrun's processes)")
    train.add_argument("--lr", type=arguments.positive_float, default=defaults.learning_rate)
    train.add_argument("--warmup-steps", type=arguments.non_negative_int, default=defaults.warmup_steps)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    clipping = train.add_mutually_exclusive_group()  # both at once would contradict each other
    clipping.add_argument("--grad-clip", type=arguments.positive_float, default=defaults.grad_clip)
    clipping.add_argument("--no-grad-clip", action="store_true", help="do not clip the gradient norm")
    train.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    train.add_argument("--no-ema-warmup", action="store_true", help="use the full EMA decay from step 0")
    train.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                       help="the noise schedule; β is stored in every checkpoint as numbers (linear: 1e-4 → 0.02 "
                            "scaled by 1000/T, so any T ends near pure noise)")
    train.add_argument("--train-timesteps", type=arguments.positive_int, default=defaults.num_train_timesteps)
    train.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=defaults.prediction_type)
    train.add_argument("--min-snr-gamma", type=arguments.positive_float, default=None,
                       help="Min-SNR-γ loss weighting (default: off)")
    train.add_argument("--variance-type", choices=TRAINED_VARIANCE_TYPES, default=defaults.variance_type,
                       help="σ_t of sampling: fixed_small / fixed_large (fixed), or learned_range (the model learns it "
                            "with improved DDPM's hybrid loss L_simple + λ·L_vlb; it outputs 2C channels)")
    train.add_argument("--vlb-weight", type=arguments.positive_float, default=defaults.vlb_weight,
                       help="λ of the hybrid loss (--variance-type learned_range)")
    train.add_argument("--class-conditional", action="store_true",
                       help="train on the dataset's classes (shapes: the kind of the top shape; CIFAR-10: its ten "
                            "classes; an image folder: one sub-folder per class) for classifier-free guidance; the "
                            "model gets one more class, the null class (trained when --cond-drop-prob > 0), which "
                            "`sample --guidance-scale` uses")
    train.add_argument("--cond-drop-prob", type=arguments.probability, default=None,
                       help="with --class-conditional: how often a label is replaced by the null class, so one model "
                            f"learns the conditional and the unconditional score (default {defaults.cond_drop_prob}; "
                            "0 trains a conditional model with no null class, which guidance cannot use)")
    train.add_argument("--seed", type=arguments.non_negative_int, default=defaults.seed)
    train.add_argument("--dtype", choices=TRAINING_DTYPES, default=defaults.dtype,
                       help="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU); weights stay float32")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the U-Net (default: on CUDA only)")
    train.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC activations (default on)")
    train.add_argument("--checkpoint-every", type=arguments.positive_int, default=defaults.checkpoint_every)
    train.add_argument("--keep-checkpoints", type=arguments.positive_int, default=defaults.keep_checkpoints)
    train.add_argument("--log-every", type=arguments.positive_int, default=defaults.log_every)
    train.add_argument("--sample-every", type=arguments.non_negative_int, default=defaults.sample_every,
                       help="write an EMA sample grid every N steps (0: never)")
    train.add_argument("--sample-count", type=arguments.positive_int, default=defaults.sample_count)
    train.add_argument("--sample-steps", type=arguments.positive_int, default=None,
                       help="num_inference_steps of the sample grids (default: every training timestep)")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard events to RUN_DIR (loss, lr, grad norm, images/s, sample grids; "
                            "needs `pip install tensorboard`)")
    train.add_argument("--num-workers", type=arguments.non_negative_int, default=defaults.num_workers,
                       help="DataLoader worker processes")
    train.add_argument("--device", type=arguments.device, default="auto",
                       help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


# A flag's destination -> the TrainingConfig field it sets, where the two names differ; and the flags that set none.
FIELD_OF_FLAG = {"skip_unreadable": "skip_unreadable_images", "train_timesteps": "num_train_timesteps",
                 "lr": "learning_rate", "no_grad_clip": "grad_clip", "no_ema_warmup": "ema_warmup"}
NOT_SETTINGS = ("command", "run_dir", "resume", "device", "no_progress", "given")


def settings_from_arguments(args: argparse.Namespace, given: set[str] | None = None) -> dict:
    """The TrainingConfig fields the arguments set: all of them (defaults included), or with `given` (the flags
    typed, see arguments.given_destinations) only those, for a resumed run to check against its stored config."""
    settings = dict(
        model=args.model, data=args.data, data_key=args.data_key, data_range=args.data_range,
        skip_unreadable_images=args.skip_unreadable,
        image_size=args.image_size, num_workers=args.num_workers,
        schedule=args.schedule, num_train_timesteps=args.train_timesteps, prediction_type=args.prediction_type,
        min_snr_gamma=args.min_snr_gamma, variance_type=args.variance_type, vlb_weight=args.vlb_weight,
        class_conditional=args.class_conditional, tensorboard=args.tensorboard,
        cond_drop_prob=args.cond_drop_prob if args.cond_drop_prob is not None else TrainingConfig.cond_drop_prob,
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        grad_clip=None if args.no_grad_clip else args.grad_clip, ema_decay=args.ema_decay,
        ema_warmup=not args.no_ema_warmup, seed=args.seed, dtype=args.dtype, channels_last=args.channels_last,
        compile=args.compile, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every, sample_every=args.sample_every, sample_count=args.sample_count,
        sample_steps=args.sample_steps)
    if given is None:
        return settings
    fields = {FIELD_OF_FLAG.get(dest, dest) for dest in given if dest not in NOT_SETTINGS}
    return {name: value for name, value in settings.items() if name in fields}


def config_from_arguments(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(**settings_from_arguments(args))


def run_train(args: argparse.Namespace) -> int:
    # Every check that needs no torch comes first: a mistyped flag is reported at once, not after the imports.
    given = getattr(args, "given", None)
    try:
        if args.resume and not args.run_dir.is_dir():  # a mistyped folder would silently start a new run
            raise ValueError(f"--resume: {args.run_dir} is no run folder (drop --resume to start one)")
        resuming = args.resume and given is not None and (args.run_dir / CHECKPOINTS_DIR).is_dir()
        if resuming:  # the run's stored setup, with the flags given checked against it (or changing what may change)
            config = settings_from_arguments(args, given)
        else:
            if args.cond_drop_prob is not None and not args.class_conditional:
                raise ValueError("--cond-drop-prob applies to --class-conditional training only")
            config = config_from_arguments(args)
    except (TypeError, ValueError) as error:
        print(f"ddpm-fast train: error: {error_text(error)}", file=sys.stderr)
        return 2

    from ..sampling.distributed import init_from_environment, teardown
    from ..training.trainer import Trainer

    try:
        rank, world_size, device = init_from_environment(args.device)
    except ValueError as error:  # --device cuda without CUDA, a device torch cannot read
        print(f"ddpm-fast train: error: {error_text(error)}", file=sys.stderr)
        return 2
    try:
        try:
            threads = configure_torch_threads() if device.type == "cpu" else None
            if threads is not None and rank == 0:
                print(threads, flush=True)
            trainer = Trainer(config, args.run_dir, device=device, resume=args.resume,
                              progress=not args.no_progress)
        except (TypeError, ValueError, FileNotFoundError) as error:  # bad data, sizes, a resume that does not fit
            print(f"ddpm-fast train: error: {error_text(error)}", file=sys.stderr)
            return 2
        config = trainer.config
        if rank == 0:
            resumed = getattr(trainer, "resumed_from", None)
            print(f"training {config.model} U-Net ({trainer.model.num_parameters():,} parameters) on "
                  f"{_describe(trainer.dataset)}, {world_size} process(es) on {device}, global batch "
                  f"{config.batch_size}" + (f", resumed from {resumed} (its stored setup)" if resumed else ""),
                  flush=True)
            if trainer.class_names is not None:
                names = ", ".join(f"{i} {name}" for i, name in enumerate(trainer.class_names))
                null = (f"; null class {trainer.null_class_label} (labels dropped with probability "
                        f"{config.cond_drop_prob})" if trainer.null_class_label is not None else "; no null class")
                print(f"class-conditional: {len(trainer.class_names)} classes ({names}){null}", flush=True)
        try:
            summary = trainer.train()
        except (ValueError, OSError) as error:  # e.g. an image the data folder holds but Pillow cannot read
            print(f"ddpm-fast train: error: {error_text(error)} (the last good checkpoint, if any, is kept; --resume continues "
                  "from it)", file=sys.stderr)
            return 2
        if rank == 0:
            state = "stopped early at" if summary.interrupted else "reached"
            loss = f"{summary.final_loss:.4f}" if summary.final_loss is not None else "n/a"
            print(f"{state} step {summary.step}: {summary.steps_this_run} steps in {summary.seconds:.1f} s "
                  f"({summary.images_per_second:.1f} images/s), last loss {loss}; checkpoint {summary.checkpoint}",
                  flush=True)
    finally:
        teardown()
    if summary.interrupted:  # a script must tell a stopped run from a finished one: the shell's 128 + signal
        return 128 + int(trainer.stop_signal or signal.SIGINT)  # another rank's signal stopped this one: as Ctrl-C
    return 0


def _describe(dataset) -> str:
    from ..data.datasets import describe

    return describe(dataset)
