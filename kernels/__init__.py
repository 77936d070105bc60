"""Fused Triton kernels of ddpm_fast, one module per kernel family.

Each module holds the @triton.jit kernel(s), a plain-torch reference of the same function (tests, CPU fallback,
ONNX export) and a `torch.library.triton_op` registration (namespace ``ddpm_fast``), so torch.compile and CUDA-graph
capture see one op. Dispatch: CUDA tensors run the kernel; CPU tensors run the reference, or the kernel itself in
the Triton interpreter when TRITON_INTERPRET=1 was set before triton was imported.

Importing this package imports neither torch nor Triton: the names below load their module on first use (PEP 562),
and ``ddpm_fast.kernels.ops`` registers every op at once. The constants live in ``ddpm_fast.vocabulary``.
"""

from .._lazy import lazy_names as _lazy_names
from ..vocabulary import COEFFICIENT_ROWS, PREDICTION_TYPES, VARIANCE_TYPES

_MODULE_OF = {
    "cpu_reference": "launch",
    "inline_references": "launch",
    "group_norm_act": "group_norm",
    "group_norm_act_op": "group_norm",
    "group_norm_act_reference": "group_norm",
    "philox_normal_op": "philox",
    "philox_normal_reference": "philox",
    "q_sample_op": "q_sample",
    "q_sample_philox_op": "q_sample",
    "q_sample_reference": "q_sample",
    "ddim_step_op": "reverse_step",
    "dpm_solver_step_op": "dpm_solver",
    "dpm_solver_step_reference": "dpm_solver",
    "ddim_step_reference": "reverse_step",
    "p_step_op": "reverse_step",
    "p_step_reference": "reverse_step",
    "unipc_step_op": "unipc",
    "unipc_step_reference": "unipc",
}

__all__ = ["COEFFICIENT_ROWS", "PREDICTION_TYPES", "VARIANCE_TYPES", *_MODULE_OF]


__getattr__, __dir__ = _lazy_names(__name__, _MODULE_OF)
