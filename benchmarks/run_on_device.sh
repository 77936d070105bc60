#!/usr/bin/env bash
# One call of the GPU verification plan (benchmarks/device_plan.py), as one command for the device tool:
#   bash benchmarks/run_on_device.sh <git commit of the work tree> [call: 1 (default) | 2 | 3 | 4 | 5]
# Call 1: preflight, the gpu tests in parallel under a deadline, then the headline (sampling at batch 1 and 16, the
# kernels group); calls 2-5: sampling at 128/512 and quality, unet + training, guidance + onnx, cold start. Each call
# finishes within ~9 minutes and leaves at most 6 files under $OUT (plan.txt first). Run it with a timeout_s of about
# 590.
set -euo pipefail
cd "$(dirname "$0")/.."
commit="${1:-unknown}"
call="${2:-1}"
exec python3 benchmarks/device_plan.py --call "$call" --commit "$commit" ${DEVICE_PLAN_ARGS:-}
