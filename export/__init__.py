"""ONNX export and ONNX Runtime sampling for ddpm_fast models, and pt2 packages (the U-Net compiled ahead of time)
(installed as ``ddpm_fast.export``).

    from ddpm_fast.export import export_onnx, export_pt2, OnnxSampler
    export_onnx(model, "step.onnx", sample_shape=(3, 32, 32), schedule=schedule, graph="ddpm_step")
    export_pt2("runs/shapes", "shapes.pt2")      # FastSampler.from_pretrained("shapes.pt2") samples it
"""

from .metadata import read_metadata
from .onnx_export import GRAPHS, OPSET, export_onnx
from .onnx_sampler import OnnxProviderFallbackWarning, OnnxSampler
from .pt2_export import export_pt2

__all__ = ["GRAPHS", "OPSET", "OnnxProviderFallbackWarning", "OnnxSampler", "export_onnx", "export_pt2",
           "read_metadata"]
