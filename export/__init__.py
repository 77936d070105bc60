"""ONNX export and ONNX Runtime sampling for ddpm_fast models (installed as ``ddpm_fast.export``).

    from ddpm_fast.export import export_onnx, OnnxSampler
    export_onnx(model, "step.onnx", sample_shape=(3, 32, 32), schedule=schedule, graph="ddpm_step")
"""

from .metadata import read_metadata
from .onnx_export import GRAPHS, OPSET, export_onnx
from .onnx_sampler import OnnxProviderFallbackWarning, OnnxSampler

__all__ = ["GRAPHS", "OPSET", "OnnxProviderFallbackWarning", "OnnxSampler", "export_onnx", "read_metadata"]
