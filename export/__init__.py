"""ONNX export and ONNX Runtime sampling for ddpm_fast models (installed as ``ddpm_fast.export``)."""
