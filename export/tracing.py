"""What both exporters (ONNX, pt2) do around torch.export: keep torch's notes on its own internals quiet."""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_torch_export():
    """Drops the FutureWarning torch.export's pytree code raises by using its own deprecated LeafSpec (no caller can
    act on it); every other warning passes as usual."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        yield
