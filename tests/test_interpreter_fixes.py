"""kernels/interpreter_fixes.py under TRITON_INTERPRET=1: a launch patches triton.language once (not again at each
call of a jitted helper inside it), computes what it computed before, and leaves the language as it found it.

The launch test needs the interpreter running in this process (CI's leg 1b and leg 2); on the torch-reference path
the interpreter is checked to be left as triton ships it.
"""

import pytest
import torch
import triton
import triton.language as tl

from ddpm_fast.kernels import launch

needs_the_interpreter = pytest.mark.skipif(not launch.TRITON_INTERPRETED,
                                           reason="launches a kernel in the interpreter: TRITON_INTERPRET=1 only")


@triton.jit
def _double(x):
    return x * 2


@triton.jit
def _with_helpers(x_ptr, out_ptr, N: tl.constexpr):
    offsets = tl.arange(0, N)
    value = tl.load(x_ptr + offsets)
    for _ in range(3):
        value = _double(value)
    tl.store(out_ptr + offsets, value)


@triton.jit
def _without_helpers(x_ptr, out_ptr, N: tl.constexpr):
    offsets = tl.arange(0, N)
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets) * 8)


def test_the_interpreter_is_patched_only_where_it_runs():
    from triton.runtime import interpreter

    assert getattr(interpreter._patch_lang, "once_per_launch", False) == launch.TRITON_INTERPRETED
    assert getattr(interpreter._patch_lang_tensor, "squeezes_index", False) == launch.TRITON_INTERPRETED


@needs_the_interpreter
def test_a_launch_patches_the_language_once_and_restores_it(monkeypatch):
    from triton.runtime import interpreter

    scans = []
    scan = interpreter._patch_builtin  # what one patch of the language runs a few times (inspect.getmembers)
    monkeypatch.setattr(interpreter, "_patch_builtin", lambda *args: (scans.append(1), scan(*args))[1])
    x = torch.arange(8, dtype=torch.float32)
    plain, helped = torch.empty_like(x), torch.empty_like(x)
    _without_helpers[(1,)](x, plain, N=8)
    one_patch = len(scans)
    scans.clear()
    _with_helpers[(2,)](x, helped, N=8)  # two programs, three helper calls each
    assert one_patch > 0 and len(scans) == one_patch  # the helper calls patched nothing again
    assert torch.equal(helped, x * 8) and torch.equal(plain, x * 8)
    assert tl.core.is_builtin(tl.load) and tl.core.is_builtin(tl.arange)  # restored after the launch
    assert launch_state_is_clear(interpreter)


def launch_state_is_clear(interpreter) -> bool:
    """Outside a launch, a helper's patch is a real one again (a jitted helper called from Python patches the
    language like the interpreter itself does)."""
    scope = interpreter._patch_lang(_double.fn)
    try:
        return not tl.core.is_builtin(tl.load)  # patched: the interpreter's own wrapper, not the builtin
    finally:
        scope.restore()
