#!/usr/bin/env bash
# One call on the lent GPU machine (run from the repository root): the `gpu`-marked tests, then benchmark suites
# through `ddpm-fast bench` (full mode). Everything lands in $OUT (bench/ holds results.json, results.md, plots).
#   usage (from the device tool): bash benchmarks/run_on_device.sh <git commit of the work tree> [suite ...]
#   suites: kernels unet training sampling onnx (default: all); BENCH_ARGS="--quick" or BENCH_ARGS="-k EXPR" pass more.
#
# A device call runs at most 10 minutes and a session has 30 minutes of device time, and a full run does not fit in
# one call: split it by suite, SKIP_GPU_TESTS=1 on every call after the first:
#   1. bash benchmarks/run_on_device.sh <commit> kernels unet            (unet compiles ours and diffusers' U-Net)
#   2. DDPM_FAST_SAMPLING_BATCHES=1,16 ... sampling                    (two compiled U-Nets per batch size)
#   3. DDPM_FAST_SAMPLING_BATCHES=128,512 ... sampling
#   4. ... training
#   5. ... onnx   (exports ddpm-cifar10 on the CPU, ~1 min per file; needs onnx, onnxscript and onnxruntime-gpu;
#                  versions.txt records whether onnxruntime is there and has the CUDA provider)
# Then, on this machine, one result set from the calls (never edited by hand afterwards):
#   ddpm-fast bench --merge call1/bench call2/bench ... --out benchmarks/results/<device>-<date>/
#   python benchmarks/report.py --readme benchmarks/results --write README.md
set -u
export DDPM_FAST_COMMIT="${1:-unknown}"
shift || true
suites=("$@")
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
args=(--out "$out/bench")
if [ "${#suites[@]}" -gt 0 ]; then
  args+=(--suite "${suites[@]}")
fi
# shellcheck disable=SC2086  # BENCH_ARGS is split into arguments on purpose
python3 -m ddpm_fast bench "${args[@]}" ${BENCH_ARGS:-} > "$out/bench.log" 2>&1
echo "ddpm-fast bench exit status $?"
tail -n 8 "$out/bench.log"
head -n 40 "$out/bench/results.md" 2>/dev/null
