"""The ddpm_fast document an exported ONNX file carries: one JSON value under METADATA_KEY in its metadata_props
(the graph, dtype, sample shape, step options and the diffusion setup), written by export_onnx and read back by
OnnxSampler and the contrib-op rewrite."""

from __future__ import annotations

import json
from typing import Any

METADATA_KEY = "ddpm_fast"  # one JSON document in the model's metadata_props


def read_metadata(proto) -> dict[str, Any]:
    """The ddpm_fast metadata of a loaded ModelProto (ValueError when the file was not written by export_onnx)."""
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError("this ONNX file carries no ddpm_fast metadata (it was not written by export_onnx)")
