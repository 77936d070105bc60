"""What both exporters (ONNX, pt2) do around torch.export: keep torch's notes on its own internals quiet."""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_torch_export():
    """Drops two notes no caller can act on: the FutureWarning torch.export's pytree code raises by using its own
    deprecated LeafSpec, and the DeprecationWarning torch's own torch.utils.mkldnn raises (its use of
    torch.jit.script_method) when inductor is first imported. Every other warning passes as usual."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"`torch.jit.script_method` is deprecated",
                                category=DeprecationWarning)
        yield
