#!/usr/bin/env bash
# Run once on a machine with a CUDA GPU, from anywhere: checks training on CUDA, then measures it.
#   1. tests/fleet/test_cuda.py: a grouped update on CUDA against the same update alone on CUDA and on the CPU
#      (float32: relative L2 below 1e-4, every entry within 1e-4), bf16 against float32 (relative L2 below 0.15),
#      evaluation on CUDA against the CPU, and a short run whose two workers share the GPU through Ray.
#   2. benchmarks/throughput.py on CUDA in bf16: 100 clients a round at the quickstart's local work, one at a
#      time and in groups of 25, four workers sharing the GPU (0.25 each);
#   3. the same for a SmolLM2-135M-shaped model built here (--shaped), at 8 steps of 16 x 64 tokens;
#   4. the built-in model again in float32.
# Output goes to $OUT when set (else a new temporary folder, printed at the end): one log per step and
# summary.txt. Installs nothing but this project (pip install -e ".[test]") when it cannot be imported. Each
# step has a time limit; together they stay under 9 minutes, the last step the first to give way.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export RAY_TMPDIR="$(mktemp -d)" TOKENIZERS_PARALLELISM=false
summary="$OUT/summary.txt"
: > "$summary"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, note the exit status
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee -a "$summary"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit status $status$([ "$status" = 124 ] && echo ' (time limit)')" | tee -a "$summary"
}

if ! "$PYTHON" -c "import fleet.pool, scenarios.runner, pytest" 2>/dev/null; then  # this project's dependencies
    "$PYTHON" -m pip install -e ".[test]" > "$OUT/pip.log" 2>&1 || { echo "pip install failed: $OUT/pip.log"; exit 1; }
fi
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$summary"
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device: nothing to check here"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

GPU_RUN=(--device cuda --rounds 3 --workers 4 --gpus-per-worker 0.25 --group 25)
step cuda_tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/fleet/test_cuda.py
step throughput_bf16 130 "$PYTHON" benchmarks/throughput.py "${GPU_RUN[@]}" --dtype bf16
step throughput_smollm2_bf16 160 "$PYTHON" benchmarks/throughput.py "${GPU_RUN[@]}" --dtype bf16 \
    --shaped SmolLM2-135M --set training.local_steps=8 --set training.batch_size=16 --set training.seq_len=64
step throughput_fp32 130 "$PYTHON" benchmarks/throughput.py "${GPU_RUN[@]}" --dtype fp32
for name in throughput_bf16 throughput_smollm2_bf16 throughput_fp32; do
    grep -E "^(device|round|runtime|grouped|  )" "$OUT/$name.log" >> "$summary"
done
echo "output: $OUT"
