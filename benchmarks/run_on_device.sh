#!/usr/bin/env bash
# One full call on the lent GPU machine (run from the repository root): GPU tests, then the benchmark suite.
# Everything lands in $OUT; copy it to benchmarks/results/<device>-<date>/ and commit it.
#   usage (from the device tool): bash benchmarks/run_on_device.sh <git commit of the work tree> [benchmark files...]
# A device call may run 10 minutes: the whole suite compiles the U-Net once per batch size, so when time is short
# pass a subset (e.g. benchmarks/test_unet_forward.py) and run the rest in a second call (SKIP_GPU_TESTS=1 there).
# benchmarks/test_sampling.py alone compiles two U-Nets per batch size (~10 min for all four): split it by batch,
# e.g. "benchmarks/test_sampling.py::test_sampling[1x3x32x32]" "benchmarks/test_sampling.py::test_sampling[16x3x32x32]"
# in one call and the 128 and 512 cases in the next.
# benchmarks/test_onnx_runtime.py (ORT CUDA vs FastSampler) exports ddpm-cifar10 twice on the CPU (~1 min each) and
# compiles FastSampler per batch: run it in a call of its own. It needs the [onnx] extra (onnx, onnxscript,
# onnxruntime-gpu); versions.txt records whether onnxruntime is there and has the CUDA provider.
set -u
export DDPM_FAST_COMMIT="${1:-unknown}"
shift || true
selection=("${@:-benchmarks}")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-/tmp/ddpm_fast_out}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
  | tee "$out/versions.txt"
python3 -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())" 2>&1 \
  | tail -n 1 | tee -a "$out/versions.txt"
if [ -z "${SKIP_GPU_TESTS:-}" ]; then
  python3 -m pytest tests -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log" | tail -n 15
fi
python3 -m pytest "${selection[@]}" -q -p no:cacheprovider --benchmark-json="$out/results.json" > "$out/bench.log" 2>&1
tail -n 3 "$out/bench.log"
python3 benchmarks/report.py "$out/results.json" | tee "$out/results.md"
