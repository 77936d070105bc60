"""ONNX Runtime's CUDA contrib ops for an exported U-Net: GroupNorm / SkipGroupNorm (NHWC, SiLU fused) and NhwcConv.

The exporter writes every GroupNorm as the standard-op pattern Reshape → InstanceNormalization → Reshape → Mul → Add;
ONNX Runtime's own transformer optimizer (the one it ships for diffusion U-Nets) recognises that pattern and rewrites
it into its `com.microsoft` kernels. Those kernels exist for the CUDA provider only, so a fused file is for GPU
deployment; the standard-op file runs everywhere.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Union

from ddpm_fast import files

from .metadata import METADATA_KEY, read_metadata

CONTRIB_OPS = ("GroupNorm", "SkipGroupNorm", "NhwcConv")


def fuse_contrib_ops(source: Union[str, os.PathLike], target: Union[str, os.PathLike]) -> dict[str, int]:
    """Rewrite an export_onnx file into one using ONNX Runtime's CUDA contrib ops; returns {op: count} of the fused
    ops. The metadata is kept and marked ("contrib_ops": true); the file is written atomically."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    source, target = pathlib.Path(source), pathlib.Path(target)
    proto = onnx.load(source)
    metadata = read_metadata(proto)
    if metadata.get("contrib_ops"):
        raise ValueError(f"{source} already uses the contrib ops")
    options = FusionOptions("unet")
    options.enable_group_norm = True
    options.enable_skip_group_norm = True
    options.group_norm_channels_last = True  # the NHWC kernels, with NhwcConv between them
    optimized = optimize_model(str(source), model_type="unet", opt_level=0, optimization_options=options,
                               use_gpu=True, only_onnxruntime=False)
    fused = optimized.model
    counts = {op: sum(node.op_type == op for node in fused.graph.node) for op in CONTRIB_OPS}
    if not counts["GroupNorm"] + counts["SkipGroupNorm"]:
        raise ValueError(f"{source}: no GroupNorm pattern was fused (is this a ddpm_fast U-Net export?)")
    if not any(entry.domain == "com.microsoft" for entry in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    metadata["contrib_ops"] = True
    del fused.metadata_props[:]
    entry = fused.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(fused)  # contrib ops have no ONNX shape functions: no strict inference here
    files.atomic_write_bytes(target, fused.SerializeToString())
    return counts
