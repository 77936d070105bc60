"""Two fixes to the Triton interpreter (TRITON_INTERPRET=1), applied by `launch` when it runs: one for correctness
under triton 3.6 with numpy >= 2.4, one for speed on every version. Compiled kernels never see either.

Both replace private functions of `triton.runtime.interpreter` (present, with the same signatures, in triton 3.6
through 3.9) and leave the interpreter alone where those names are missing.
"""

from __future__ import annotations

import threading

import triton.language as tl


def index_scalars_of_any_shape() -> None:
    """Let the interpreter of triton 3.6 use a kernel's scalar as a `range` bound under numpy >= 2.4.

    That interpreter holds scalars as 1-element arrays and makes an index of one with int(array), which numpy 2.4
    refuses for arrays that are not 0-d; triton 3.9's interpreter squeezes the array first, and so does this patch
    of the older one.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.squeezes_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor


def patch_the_language_once_per_launch() -> None:
    """Patch triton.language once per launch, not again at every call of a @triton.jit helper inside it.

    The interpreter swaps triton.language's builtins for its own at a launch (`_patch_lang`: inspect.getmembers over
    tl, tl.math and tl.tensor, about a millisecond) and restores them after it. It also runs `_patch_lang` at every
    call of a jitted helper, where it changes nothing the launch has not already changed when the helper's module sees
    the same language modules (tl, tl.core) as the kernel's. Our kernels call helpers inside their loops
    (`_tile_offsets`, `_load_z`, ...), so that repetition was half of the interpreter's time in the GroupNorm tests.
    Inside a launch, a helper whose language modules are patched already skips it; anything else patches as before.
    """
    from triton.runtime import interpreter

    patch_lang = getattr(interpreter, "_patch_lang", None)
    executor = getattr(interpreter, "GridExecutor", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    if patch_lang is None or executor is None or scope_type is None or getattr(patch_lang, "once_per_launch", False):
        return
    launch_call = executor.__call__
    state = threading.local()  # state.patched: ids of the modules the running launch has patched; None outside one

    def languages(fn) -> frozenset[int]:
        return frozenset(id(value) for value in fn.__globals__.values() if value is tl or value is tl.core)

    def patch_once(fn):
        patched = getattr(state, "patched", None)
        if patched is not None:
            wanted = languages(fn)
            if wanted and wanted <= patched:
                return scope_type()  # an empty scope: nothing to restore
            state.patched = patched | wanted
        return patch_lang(fn)

    def call(self, *args, **kwargs):
        state.patched = frozenset()  # the launch's own _patch_lang (the first call below) patches for real
        try:
            return launch_call(self, *args, **kwargs)
        finally:
            state.patched = None

    patch_once.once_per_launch = True
    interpreter._patch_lang = patch_once
    executor.__call__ = call


def apply() -> None:
    """Both fixes (each applied once)."""
    index_scalars_of_any_shape()
    patch_the_language_once_per_launch()
