"""export_onnx: a ddpm_fast / diffusers U-Net, or one whole reverse step, to an ONNX file ONNX Runtime runs.

    from ddpm_fast.export import export_onnx
    export_onnx(model, "unet.onnx", sample_shape=(3, 32, 32), schedule=schedule)            # ε-model
    export_onnx(model, "step.onnx", sample_shape=(3, 32, 32), schedule=schedule, graph="ddpm_step")

torch.onnx.export(dynamo=True) at a pinned opset. The model is traced with the fused GroupNorm inlined as its torch
reference (kernels/launch.py `inline_references`): torch's own group norm, which the exporter writes as Reshape →
InstanceNormalization → Reshape → Mul → Add (the pattern ONNX Runtime's optimizers fuse), never as
GroupNormalization-18, whose definition was wrong and which ONNX Runtime lacks at opset 21. The file is checked
(onnx.checker, strict shape inference) and written atomically; the model's config, the schedule and the step's
options travel in its metadata, so a sampler can be built from the file alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ddpm_fast import files
from ddpm_fast.diffusion_setup import DiffusionSetup, model_class_count
from ddpm_fast.interop.pretrained import load_pretrained, require_weights, resolve_setup
from ddpm_fast.kernels import launch
from ddpm_fast.checks import (check_chain_options, check_choice, check_disable_corrector, check_positive_float,
                              check_solver_options)
from ddpm_fast.vocabulary import (DEFAULTS, EXPORT_DTYPES, GRAPHS, PREDICTION_TYPES, SOLVER_DEFAULTS, UNIPC_ROWS,
                                  VARIANCE_TYPES)
from ddpm_fast.models.unet import UNet
from ddpm_fast.schedule import NoiseSchedule

from .contrib_ops import fuse_contrib_ops
from .metadata import METADATA_KEY
from .tracing import quiet_torch_export
from .step_graphs import DDIMStepGraph, DDPMStepGraph, DPMSolverStepGraph, ModelGraph, UniPCStepGraph

OPSET = 18  # pinned: what the tests prove; torch's exporter writes group norm as InstanceNormalization here
DTYPES = {getattr(torch, name): name for name in EXPORT_DTYPES}  # torch dtype -> its name in the metadata
MAX_BATCH = 1 << 16
# The step options when neither the call nor the source (a diffusers pipeline folder's scheduler) sets them.
DEFAULT_OPTIONS = {name: DEFAULTS[name] for name in ("prediction_type", "variance_type", "clip_sample",
                                                     "clip_sample_range")}
# Which timesteps a sampler of the file visits (FastSampler's options of the same names), stored in its metadata.
CHAIN_OPTIONS = {**{name: DEFAULTS[name] for name in ("timestep_spacing", "steps_offset", "set_alpha_to_one")},
                 **SOLVER_DEFAULTS}

# Inputs and outputs of each graph, in order (see step_graphs.py).
INPUT_NAMES = {
    "model": ("sample", "timestep"),
    "ddpm_step": ("sample", "timestep", "noise"),
    "ddim_step": ("sample", "timestep", "prev_timestep", "noise"),
    "dpm_solver_step": ("sample", "timestep", "solver_coefficients", "prev_pred_original_sample", "noise"),
    "unipc_step": ("sample", "timestep", "unipc_coefficients", "last_sample", "prev_pred_original_sample",
                   "prev_pred_original_sample_2", "prev_pred_original_sample_3"),
}
OUTPUT_NAMES = {"model": ("model_output",), "ddpm_step": ("prev_sample",), "ddim_step": ("prev_sample",),
                "dpm_solver_step": ("prev_sample", "pred_original_sample"),
                "unipc_step": ("prev_sample", "corrected_sample", "pred_original_sample")}


def input_names(graph: str, class_conditional: bool = False, guided: bool = False) -> tuple[str, ...]:
    """A graph's inputs in order: INPUT_NAMES, then class_labels [B] int64 for a class-conditional model, then (step
    graphs of a model with a null class) guidance_scale [1] float32."""
    names = INPUT_NAMES[graph] + (("class_labels",) if class_conditional else ())
    return names + (("guidance_scale",) if guided and graph != "model" else ())


def export_onnx(
    model: Union[nn.Module, str, os.PathLike],
    path: Union[str, os.PathLike],
    sample_shape: Optional[tuple[int, int, int]] = None,
    *,
    graph: str = "model",
    schedule: Optional[NoiseSchedule] = None,
    prediction_type: Optional[str] = None,
    variance_type: Optional[str] = None,
    clip_sample: Optional[bool] = None,
    clip_sample_range: Optional[float] = None,
    eta: float = 0.0,
    dtype: torch.dtype = torch.float32,
    dynamic_spatial: Optional[bool] = None,
    opset: int = OPSET,
    contrib_ops: bool = False,
    timestep_spacing: Optional[str] = None,
    steps_offset: Optional[int] = None,
    set_alpha_to_one: Optional[bool] = None,
    setup: Optional[DiffusionSetup] = None,
    weights: Optional[str] = None,
    override_setup: bool = False,
    null_class_label: Optional[int] = None,
    solver_order: Optional[int] = None,
    lower_order_final: Optional[bool] = None,
    final_sigmas_type: Optional[str] = None,
    euler_at_final: Optional[bool] = None,
    use_karras_sigmas: Optional[bool] = None,
    use_lu_lambdas: Optional[bool] = None,
    use_exponential_sigmas: Optional[bool] = None,
    thresholding: Optional[bool] = None,
    dynamic_thresholding_ratio: Optional[float] = None,
    sample_max_value: Optional[float] = None,
    solver_type: Optional[str] = None,
    disable_corrector: Optional[Sequence[int]] = None,
) -> pathlib.Path:
    """Write `model` as ONNX to `path` (a file name ending in .onnx, else ValueError; missing parent folders are
    made, as `ddpm-fast export --out` makes them; an existing file is replaced whole); returns the path. `model` is
    our UNet (or any nn.Module), a diffusers UNet2DModel, or any source ddpm_fast.interop.pretrained.load_pretrained
    reads: a training run folder (its last good checkpoint, EMA weights unless weights="model"), a checkpoint folder,
    a UNet.save folder, a diffusers pipeline or UNet2DModel folder, a Hugging Face Hub id. A source's stored setup
    (β, prediction and variance type, clipping, spacing, DDIM's final ᾱ, sample shape) is what the file bakes in and
    stores; for a module, `setup=` (a ddpm_fast.DiffusionSetup) gives it.

    graph: "model" — inputs sample [B, C, H, W] (dtype) and timestep [B] int64, output model_output (what the model
        predicts: ε, x0 or v, per prediction_type). "ddpm_step" — inputs sample (x_t, float32), timestep, noise
        (float32, z of the step), output prev_sample (x_{t-1}, float32): the U-Net plus the ancestral update with the
        schedule as constants, so a sampling loop is T calls of one graph. "ddim_step" — adds prev_timestep [B]
        int64 (-1 ends the chain) and bakes eta. "dpm_solver_step" — one DPM-Solver++ step, ODE or SDE (Lu et al.
        2022): inputs sample, timestep, solver_coefficients (float32 [6], STEP_GRAPH_SOLVER_ROWS: the step's column
        of the chain's solver table, which depends on the whole chain), prev_pred_original_sample (the previous
        step's x0 estimate, float32, zeros at first) and noise; outputs prev_sample and pred_original_sample.
        "unipc_step" — one UniPC step (Zhao et al. 2023), the corrector at this point and the predictor to the next:
        inputs sample, timestep, unipc_coefficients (float32 [14], the step's column of the chain's UniPC table,
        UNIPC_ROWS), last_sample (the previous corrected sample), prev_pred_original_sample,
        prev_pred_original_sample_2 and prev_pred_original_sample_3 (the last three calls' x0, newest first; zeros
        where there are none yet); outputs prev_sample, corrected_sample and pred_original_sample, any order 1-3 and
        solver_type. A class-conditional model's graphs also take class_labels [B] int64; where its setup names a null class (null_class_label), its step graphs take guidance_scale [1]
        float32 and run the model once on 2B samples (the labels, then the null class) for classifier-free guidance
        (w = 1: the conditional model; input_names() lists a graph's inputs).
    dtype: float32 or float16 weights (a step graph still takes and returns float32 x_t).
    dynamic_spatial: H and W dynamic too (multiples of the U-Net's downsampling factor); default on for our UNet.
    schedule: needed by the step graphs; for "model" it is stored in the metadata when given (a diffusers pipeline
        folder brings its own).
    contrib_ops: rewrite the GroupNorms and convolutions into ONNX Runtime's NHWC CUDA contrib ops (com.microsoft
        GroupNorm / SkipGroupNorm, NhwcConv; see contrib_ops.py): a file for the CUDA provider only.
    schedule, prediction_type, variance_type, clip_sample, clip_sample_range, timestep_spacing, steps_offset,
        set_alpha_to_one: None takes the stored setup's value (a folder's, or setup='s); a different value given
        here is a SetupConflict (ValueError naming both) unless override_setup=True. With nothing stored, a given
        value is used, and the rest default to "epsilon", "fixed_small", False, 1.0, "linspace", 0, True (for a
        folder, a UserWarning says so). timestep_spacing, steps_offset and set_alpha_to_one tell OnnxSampler how a
        shorter chain picks its timesteps and where DDIM ends. null_class_label: the null class of a
        class-conditional model, checked against the stored one like the rest (a diffusers folder stores none).
    solver_order, lower_order_final, final_sigmas_type, euler_at_final, use_karras_sigmas, use_lu_lambdas,
        use_exponential_sigmas, thresholding, dynamic_thresholding_ratio, sample_max_value, solver_type,
        disable_corrector: the multistep solvers' options (FastSampler's), stored for OnnxSampler's DPM-Solver++ and
        UniPC chains and checked against a stored setup like the rest (defaults 2, True, "zero", False, False, False,
        False, False, 0.995, 1.0, "bh2", ()). A dpm_solver_step graph runs every one of them but solver_order=3 (its
        second x0 history) and thresholding (it changes the step), which need a model graph: the others live in the
        per-step solver_coefficients, not the graph. A unipc_step graph runs every UniPC option but thresholding.
    """
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    if pathlib.Path(path).is_dir():  # found now, not after the export's work
        raise ValueError(f"path {path} is a folder; expected the .onnx file to write")
    if pathlib.Path(path).suffix.lower() != ".onnx":  # the rule `ddpm-fast export --out` follows too
        raise ValueError(f"path {path}: expected a file name ending in .onnx")
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float16, got {dtype!r}")
    given = {"prediction_type": prediction_type, "variance_type": variance_type, "clip_sample": clip_sample,
             "clip_sample_range": clip_sample_range}
    _check_options(given)
    eta = check_positive_float("eta", eta, allow_zero=True)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < OPSET:
        raise ValueError(f"opset must be an int >= {OPSET}, got {opset!r}")
    chain_given = {"timestep_spacing": timestep_spacing, "steps_offset": steps_offset,
                   "set_alpha_to_one": set_alpha_to_one}
    check_chain_options(**chain_given)
    dpm_given = {"solver_order": solver_order, "lower_order_final": lower_order_final,
                 "final_sigmas_type": final_sigmas_type, "euler_at_final": euler_at_final,
                 "use_karras_sigmas": use_karras_sigmas, "use_lu_lambdas": use_lu_lambdas,
                 "use_exponential_sigmas": use_exponential_sigmas, "thresholding": thresholding,
                 "dynamic_thresholding_ratio": dynamic_thresholding_ratio, "sample_max_value": sample_max_value,
                 "solver_type": solver_type, "disable_corrector": disable_corrector}
    check_solver_options(**{name: SOLVER_DEFAULTS[name] if value is None else value
                            for name, value in dpm_given.items()})
    if disable_corrector is not None:  # as the setup stores it
        dpm_given["disable_corrector"] = check_disable_corrector(disable_corrector)
    chain_given.update(dpm_given)
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
    if setup is not None and not isinstance(setup, DiffusionSetup):
        raise TypeError(f"setup must be a ddpm_fast.DiffusionSetup, got {type(setup).__name__}")
    if not isinstance(override_setup, bool):
        raise TypeError(f"override_setup must be True or False, got {override_setup!r}")
    unet, setup = _model_and_setup(model, setup, {"schedule": schedule, **given, **chain_given,
                                                  "null_class_label": null_class_label}, weights, override_setup)
    chosen = setup.sampler_options() if setup is not None else {
        name: value for name, value in {**given, **chain_given}.items() if value is not None}
    options = {**DEFAULT_OPTIONS, **CHAIN_OPTIONS, **chosen}
    schedule = setup.schedule() if setup is not None else None
    prediction_type, variance_type = options["prediction_type"], options["variance_type"]
    clip_sample, clip_sample_range = bool(options["clip_sample"]), float(options["clip_sample_range"])
    if graph != "model" and schedule is None:
        raise ValueError(f"graph={graph!r} bakes the schedule into the file: pass schedule=")
    if sample_shape is None and setup is not None:
        sample_shape = setup.sample_shape
    sample_shape = _sample_shape(unet, sample_shape)
    factor = _spatial_factor(unet)
    if dynamic_spatial is None:
        dynamic_spatial = factor is not None
    if dynamic_spatial and factor is None:
        raise ValueError("dynamic_spatial=True needs our UNet (its downsampling factor fixes the allowed sizes)")
    if dynamic_spatial and (sample_shape[1] % factor or sample_shape[2] % factor):
        raise ValueError(f"sample_shape {sample_shape}: H and W must be multiples of {factor}")

    class_count = model_class_count(unet)
    null_class_label = setup.null_class_label if setup is not None else None
    names = input_names(graph, class_count is not None, null_class_label is not None)
    unet = _export_copy(unet, dtype)
    module = _graph_module(graph, unet, schedule, dtype, prediction_type, variance_type, clip_sample,
                           clip_sample_range, eta, null_class_label)
    example = _example_inputs(graph, names, sample_shape, dtype, class_count)
    # One trace: with the fused GroupNorm inlined as its torch reference, torch.export's graph needs no second pass
    # to replace the custom op before the exporter's own decomposition.
    with torch.no_grad(), launch.inline_references(), _quiet_exporter():
        shapes = _dynamic_shapes(names, dynamic_spatial, factor)
        onnx_program = torch.onnx.export(module, example, dynamic_shapes=shapes, dynamo=True, opset_version=opset,
                                         input_names=list(names), output_names=list(OUTPUT_NAMES[graph]),
                                         verbose=False)
    proto = onnx_program.model_proto
    metadata = {
        "format": 1, "graph": graph, "opset": opset, "dtype": DTYPES[dtype], "sample_shape": list(sample_shape),
        "dynamic_spatial": bool(dynamic_spatial), "spatial_factor": factor,
        "unet_config": unet.config.to_dict() if isinstance(unet, UNet) else None,
        "schedule": {"name": schedule.name, "betas": schedule.betas.tolist()} if schedule is not None else None,
        "prediction_type": prediction_type, "variance_type": variance_type, "clip_sample": bool(clip_sample),
        "clip_sample_range": clip_sample_range, "eta": eta,
        **{name: options[name] for name in CHAIN_OPTIONS},
        "inputs": list(names), "outputs": list(OUTPUT_NAMES[graph]),
        # the whole record (β, options, sample shape, class conditioning), as every artefact stores it
        "setup": dataclasses.replace(setup, sample_shape=tuple(sample_shape)).to_dict() if setup is not None else None,
    }
    _set_metadata(proto, metadata)
    check_model(proto)
    path = pathlib.Path(path)
    if not contrib_ops:
        files.atomic_write_bytes(path, proto.SerializeToString())
        return path

    standard = path.with_name(f".{path.name}.standard.onnx")  # the fusion reads a file; never left behind
    try:
        files.atomic_write_bytes(standard, proto.SerializeToString())
        fuse_contrib_ops(standard, path)
    finally:
        standard.unlink(missing_ok=True)
    return path


class _TorchvisionNotes(logging.Filter):
    """Drops torch's exporter's "torchvision is not installed. Skipping torchvision::nms" notes (one per torchvision
    op it knows): our graphs hold no torchvision op, so the notes tell a user nothing and crowd the command's stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed. Skipping torchvision::")


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter without the notes about its own internals (only these three, by their message): the notes
    above, the FutureWarning torch.export's pytree code raises by using its own deprecated LeafSpec, and the
    renaming pass's note on axes that share one dimension; no caller can act on them. Every other warning and log
    record passes as usual."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    notes = _TorchvisionNotes()
    registration.addFilter(notes)
    try:
        with quiet_torch_export(), warnings.catch_warnings():
            # Inputs sharing one Dim (the batch of sample, timestep, noise) make its renaming pass note, once per
            # shared axis, that it keeps the first name: the graph's names are ours either way.
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used, since it shares the "
                                    "same shape constraints", category=UserWarning)
            yield
    finally:
        registration.removeFilter(notes)


def check_model(proto) -> None:
    """onnx.checker (full) and strict shape inference; no GroupNormalization node."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    group_norms = [node.name for node in proto.graph.node if node.op_type == "GroupNormalization"]
    if group_norms:
        raise RuntimeError(f"export produced GroupNormalization nodes {group_norms[:3]}; expected the "
                           "InstanceNormalization decomposition")


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _check_options(options: dict) -> None:
    """The step options that are set (not None): a known prediction/variance type, a positive clip range."""
    for name, choices in (("prediction_type", PREDICTION_TYPES), ("variance_type", VARIANCE_TYPES)):
        if options[name] is not None:
            check_choice(name, options[name], choices)
    if options["clip_sample"] is not None and not isinstance(options["clip_sample"], bool):
        raise TypeError(f"clip_sample must be a bool, got {options['clip_sample']!r}")
    if options["clip_sample_range"] is not None:
        check_positive_float("clip_sample_range", options["clip_sample_range"])


def _model_and_setup(model, setup: Optional[DiffusionSetup], given: dict, weights: Optional[str],
                     override: bool) -> tuple[nn.Module, Optional[DiffusionSetup]]:
    """(the model to export, the setup it is exported with). A folder or Hub id goes through the one loader (its
    stored setup checked against `given`); a module takes `setup=` (checked the same way) or, without one, what was
    given (None when no schedule was: a model graph of a bare module stores no setup)."""
    if isinstance(model, (str, os.PathLike)):
        if setup is not None:
            raise ValueError("setup= applies to a model object; a folder brings its own setup")
        pretrained = load_pretrained(model, weights)
        require_weights(pretrained, "export ONNX from")
        return pretrained.model, resolve_setup(pretrained, given, override=override, warn=True)
    if weights is not None:
        raise ValueError("weights= applies to a training checkpoint folder; a model object holds one set of weights")
    if type(model).__name__ == "UNet2DModel" and hasattr(model, "config"):
        model = UNet.from_diffusers(model)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, a model folder or a Hub id, got {type(model).__name__}")
    if setup is not None:
        return model, setup.with_given(given, source="setup=", override=override)
    if given["schedule"] is None:
        return model, None
    options = {name: value for name, value in given.items() if name != "schedule" and value is not None}
    return model, DiffusionSetup.from_schedule(given["schedule"], num_class_embeds=model_class_count(model), **options)


def _sample_shape(model: nn.Module, sample_shape) -> tuple[int, int, int]:
    if sample_shape is None and isinstance(model, UNet):
        sample_shape = model.config.sample_shape
    if not (isinstance(sample_shape, (tuple, list)) and len(sample_shape) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sample_shape)):
        raise ValueError(f"sample_shape must be (C, H, W) of positive ints, got {sample_shape!r}")
    return tuple(sample_shape)  # type: ignore[return-value]


def _spatial_factor(model: nn.Module) -> Optional[int]:
    """What H and W must be multiples of: 2 per downsampling level of our UNet (None for other models)."""
    if not isinstance(model, UNet):
        return None
    return model.config.spatial_factor


def _export_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A CPU copy in `dtype`, eval mode, NCHW (the exporter traces on the CPU; the file is device-neutral)."""
    import copy

    model = copy.deepcopy(model).to(device="cpu", dtype=dtype, memory_format=torch.contiguous_format)
    return model.eval().requires_grad_(False)


def _graph_module(graph, unet, schedule, dtype, prediction_type, variance_type, clip_sample, clip_sample_range,
                  eta, null_class_label=None) -> nn.Module:
    if graph == "model":
        return ModelGraph(unet).eval()
    if graph == "dpm_solver_step":
        return DPMSolverStepGraph(unet, dtype, prediction_type, clip_sample, clip_sample_range,
                                  null_class_label).eval()
    if graph == "unipc_step":
        return UniPCStepGraph(unet, dtype, prediction_type, clip_sample, clip_sample_range, null_class_label).eval()
    if graph == "ddpm_step":
        return DDPMStepGraph(unet, schedule, dtype, prediction_type, variance_type, clip_sample,
                             clip_sample_range, null_class_label).eval()
    return DDIMStepGraph(unet, schedule, dtype, prediction_type, eta, clip_sample, clip_sample_range,
                         null_class_label).eval()


def _example_inputs(graph: str, names: tuple[str, ...], sample_shape: tuple[int, int, int], dtype: torch.dtype,
                    class_count: Optional[int]) -> tuple:
    batch = 2  # not 1: torch.export specialises a dimension of size 1
    x = torch.randn(batch, *sample_shape)
    values = {"sample": x.to(dtype) if graph == "model" else x,  # a step graph takes x_t in float32
              "timestep": torch.tensor([1, 2], dtype=torch.int64), "prev_timestep": torch.tensor([0, -1]),
              "noise": torch.randn_like(x), "guidance_scale": torch.tensor([2.0]),
              "prev_pred_original_sample": torch.randn_like(x), "last_sample": torch.randn_like(x),
              "prev_pred_original_sample_2": torch.randn_like(x), "prev_pred_original_sample_3": torch.randn_like(x),
              "solver_coefficients": torch.tensor([0.9, 0.4, 0.8, 0.3, -0.1, 0.2]),  # a column's first six rows
              "unipc_coefficients": torch.linspace(0.9, -0.3, len(UNIPC_ROWS)),
              "class_labels": torch.tensor([0, 1]) % (class_count or 1)}
    return tuple(values[name] for name in names)


def _dynamic_shapes(names: tuple[str, ...], dynamic_spatial: bool, factor: Optional[int]) -> tuple:
    """torch.export's dynamic shapes of the inputs: the batch always, H and W (multiples of `factor`) when asked."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=MAX_BATCH)
    image = {0: batch}
    if dynamic_spatial:
        height, width = Dim("height_blocks", min=1, max=4096), Dim("width_blocks", min=1, max=4096)
        image = {0: batch, 2: factor * height, 3: factor * width}
    per_input = {"sample": image, "noise": image, "timestep": {0: batch}, "prev_timestep": {0: batch},
                 "class_labels": {0: batch}, "guidance_scale": None, "prev_pred_original_sample": image,
                 "solver_coefficients": None, "last_sample": image, "prev_pred_original_sample_2": image,
                 "prev_pred_original_sample_3": image, "unipc_coefficients": None}
    return tuple(per_input[name] for name in names)


def _set_metadata(proto, metadata: dict) -> None:
    entry = next((prop for prop in proto.metadata_props if prop.key == METADATA_KEY), None)
    if entry is None:
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
    entry.value = json.dumps(metadata)
    proto.doc_string = ("ddpm_fast export: inputs " + ", ".join(metadata["inputs"]) + "; outputs "
                        + ", ".join(metadata["outputs"]) + f" ({metadata['graph']} graph, {metadata['dtype']})")
