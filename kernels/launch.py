"""Host-side helpers shared by the elementwise kernel launchers: dispatch, layout and tile sizes.

Every elementwise kernel of ddpm_fast sees a tensor as [B, C, HW] with arbitrary strides, so NCHW and channels-last
inputs are read in place (no layout copies). A program owns one tile of one sample: BLOCK_C channels by
4 * BLOCK_Q spatial positions, arranged as quads of 4 consecutive positions (the unit of one Philox call).
"""

from __future__ import annotations

import contextlib
import threading

import torch
import triton
from torch._subclasses.fake_tensor import is_fake

from . import interpreter_fixes


@triton.jit
def _probe():
    pass


# The Triton interpreter replaces every @triton.jit function by an InterpretedFunction when TRITON_INTERPRET=1 was
# set before triton was imported. Asking a jitted function is more reliable than re-reading the environment.
TRITON_INTERPRETED = type(_probe).__name__ == "InterpretedFunction"

if TRITON_INTERPRETED:
    interpreter_fixes.apply()


_LOCAL = threading.local()


@contextlib.contextmanager
def cpu_reference():
    """Within this block CPU tensors take the torch references even under the interpreter.

    For tests of whole models, where the interpreter (one program at a time) would take minutes; the kernels
    themselves are proven against the same references at small sizes. CUDA tensors are not affected.
    """
    previous = getattr(_LOCAL, "cpu_reference", False)
    _LOCAL.cpu_reference = True
    try:
        yield
    finally:
        _LOCAL.cpu_reference = previous


@contextlib.contextmanager
def inline_references():
    """Within this block, modules that call a fused op call its torch reference instead (models/blocks.py's
    GroupNormAct), so a graph traced for export holds torch's own ops from the start.

    For the ONNX exporter: the alternative, tracing the custom op and then replacing it (`run_decompositions`), costs
    one more trace of the whole model. The block is thread-local; outside it every call takes the fused op.
    """
    previous = getattr(_LOCAL, "inline_references", False)
    _LOCAL.inline_references = True
    try:
        yield
    finally:
        _LOCAL.inline_references = previous


def references_inlined() -> bool:
    """True inside `inline_references()`."""
    return getattr(_LOCAL, "inline_references", False)


def reaches_kernel(tensor: torch.Tensor) -> bool:
    """True when an op on `tensor` takes its Triton kernel wherever Triton can run on the tensor's device.

    CUDA tensors always do; CPU tensors do unless torch.compile is tracing them (fake tensors have no data for the
    interpreter to read, so the reference branch is what gets compiled) or a `cpu_reference()` block asks for the
    torch references. Both tracing tests are needed: torch 2.13 keeps `is_compiling()` true for the whole trace,
    while torch 2.11 traces a triton_op's body (AOT autograd, on fake tensors) after dynamo has already left it.
    """
    if tensor.is_cuda:
        return True
    return (tensor.device.type == "cpu" and not torch.compiler.is_compiling() and not is_fake(tensor)
            and not getattr(_LOCAL, "cpu_reference", False))


def runs_triton(tensor: torch.Tensor) -> bool:
    """True when `tensor` goes through the Triton kernel rather than the torch reference: a CUDA tensor, or a CPU
    tensor under the interpreter where `reaches_kernel` says so."""
    return tensor.is_cuda or (TRITON_INTERPRETED and reaches_kernel(tensor))


def wrap_triton(kernel):
    """`torch.library.wrap_triton(kernel)` for a launch inside a triton_op; the kernel itself under the interpreter.

    torch 2.11's wrap_triton refuses the interpreter's InterpretedFunction. Outside a trace wrap_triton only calls
    the kernel, and an interpreted launch never runs inside one (runs_triton sends traced CPU tensors to the
    reference), so the direct call is the same launch on every torch version.
    """
    return kernel if TRITON_INTERPRETED else torch.library.wrap_triton(kernel)


def as_bchw(x: torch.Tensor) -> torch.Tensor:
    """A 4-D view of a [B, C], [B, C, L] or [B, C, H, W] tensor (never a copy)."""
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(2)
    if x.dim() == 2:
        return x[:, :, None, None]
    raise ValueError(f"expected a tensor of 2 to 4 dimensions [B, C, *spatial], got shape {tuple(x.shape)}")


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out NHWC (and not also trivially NCHW, as when C == 1 or H == W == 1)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC 4-D tensor, else contiguous: the layout our outputs take after their input."""
    return torch.channels_last if x.dim() == 4 and is_channels_last(x) else torch.contiguous_format


def empty_like_layout(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor shaped like `x`, NHWC if `x` is, dense whatever x's strides."""
    return torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=memory_format_of(x))


def spatial_is_flat(width: int, *tensors: torch.Tensor) -> bool:
    """True when every tensor walks H and W with one stride (stride_h == W * stride_w), as NCHW and NHWC do.

    The kernel then addresses position hw as hw * stride_w instead of dividing hw by W per element.
    """
    return all(t.shape[2] == 1 or t.stride(2) == width * t.stride(3) for t in tensors)


def bchw_strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(x.stride())  # type: ignore[return-value]


def tile_config(channels: int, spatial: int, channels_last: bool, heavy: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_C, BLOCK_Q, num_warps, num_programs_per_sample) for a [C, HW] sample.

    About 2K elements per program keeps an H100 streaming without spilling (tests/launch_resources.py checks every
    kernel at the tiles real images get); channels-last tiles favour the channel axis, which is the contiguous one
    there. heavy: a kernel with more live values per element (DPM-Solver++, guided steps) gets twice the warps, so
    each thread holds half the elements: at 8 elements per thread, triton 3.6's ptxas spills them.
    """
    block_hw = min(triton.next_power_of_2(max(spatial, 4)), 1024)
    block_c_cap = max(1, 2048 // block_hw)
    block_c = min(triton.next_power_of_2(channels), block_c_cap)
    if channels_last:
        block_c = min(triton.next_power_of_2(channels), 64)
        block_hw = min(triton.next_power_of_2(max(spatial, 4)), max(4, 2048 // block_c))
    block_q = block_hw // 4
    num_warps = 8 if block_c * block_hw >= 2048 else 4
    if heavy:
        num_warps *= 2
    programs = triton.cdiv(channels, block_c) * triton.cdiv(spatial, block_hw)
    return block_c, block_q, num_warps, programs


def check_launch_bounds(x: torch.Tensor, t: torch.Tensor, min_channels: dict, **tensors) -> None:
    """Metadata-only checks (no device sync) that keep a launch inside every tensor it reads.

    x: the [B, C, *spatial] tensor the grid is built from; t: its [B] (or broadcast) timesteps; tensors: the other
    per-element inputs (None allowed), each needing at least min_channels.get(name, C) channels.
    """
    batch = x.shape[0]
    if t.dim() != 1 or t.shape[0] != batch or t.device != x.device:
        raise ValueError(f"timesteps must be a [{batch}] tensor on {x.device}, got {tuple(t.shape)} on {t.device}")
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, expected {x.device}")
        needed = min_channels.get(name, x.shape[1])
        if (tensor.dim() != x.dim() or tensor.shape[0] != batch or tensor.shape[2:] != x.shape[2:]
                or tensor.shape[1] < needed):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected [{batch}, >= {needed}, "
                             f"{', '.join(map(str, x.shape[2:]))}]")


def check_lookup_tensor(name: str, tensor: torch.Tensor, x: torch.Tensor, dtype: torch.dtype,
                        rows: int | None = None) -> None:
    """Metadata-only checks for a table the kernel indexes by t (or the seed): device, dtype, dense, non-empty.

    rows=None: a 1-D [T] vector (T >= 1, stride 1); rows=R: a contiguous [R, T] table.
    """
    if tensor.device != x.device or tensor.dtype != dtype:
        raise ValueError(f"{name} must be {dtype} on {x.device}, got {tensor.dtype} on {tensor.device}")
    shape_ok = tensor.dim() == 1 if rows is None else (tensor.dim() == 2 and tensor.shape[0] == rows)
    if not shape_ok or tensor.shape[-1] < 1 or not tensor.is_contiguous():
        expected = "[T]" if rows is None else f"[{rows}, T]"
        raise ValueError(f"{name} must be a contiguous {expected} tensor with T >= 1, got shape {tuple(tensor.shape)}")
