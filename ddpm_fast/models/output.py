"""What a model call returns, as the prediction tensor: the one rule every caller of a model (the samplers, the
training objective, the likelihood, the ONNX graphs) applies to our UNet, diffusers' models and plain callables."""

from __future__ import annotations

import torch


def unwrap_model_output(output: object) -> object:
    """What a model predicts: diffusers models return an object with .sample (or a tuple); ours a tensor."""
    if isinstance(output, (tuple, list)):
        return output[0]
    if not isinstance(output, torch.Tensor) and hasattr(output, "sample"):
        return output.sample
    return output
