"""Fused Triton kernels of ddpm_fast, one module per kernel family.

Each module holds the @triton.jit kernel(s), a plain-torch reference of the same function (tests, CPU fallback,
ONNX export) and a `torch.library.triton_op` registration (namespace ``ddpm_fast``), so torch.compile and CUDA-graph
capture see one op. Dispatch: CUDA tensors run the kernel; CPU tensors run the reference, or the kernel itself in
the Triton interpreter when TRITON_INTERPRET=1 was set before triton was imported.
"""

from ._launch import cpu_reference
from .group_norm import group_norm_act, group_norm_act_op, group_norm_act_reference
from .philox import philox_normal_op, philox_normal_reference
from .q_sample import q_sample_op, q_sample_philox_op, q_sample_reference
from .reverse_step import (
    COEFFICIENT_ROWS,
    PREDICTION_TYPES,
    VARIANCE_TYPES,
    ddim_step_op,
    ddim_step_reference,
    p_step_op,
    p_step_reference,
)

__all__ = [
    "COEFFICIENT_ROWS",
    "PREDICTION_TYPES",
    "VARIANCE_TYPES",
    "cpu_reference",
    "ddim_step_op",
    "group_norm_act",
    "group_norm_act_op",
    "group_norm_act_reference",
    "ddim_step_reference",
    "p_step_op",
    "p_step_reference",
    "philox_normal_op",
    "philox_normal_reference",
    "q_sample_op",
    "q_sample_philox_op",
    "q_sample_reference",
]
