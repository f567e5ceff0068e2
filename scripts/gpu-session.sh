#!/usr/bin/env bash
# Everything a lent GPU machine should do, in one device call of at most 9 minutes (docs/gpu-session.md).
#
#   OUT=DIR bash scripts/gpu-session.sh            # on the GPU machine ($OUT: the folder that comes back)
#   OUT=DIR bash scripts/gpu-session.sh --dry-run  # the same steps on CPU, tiny backbone (the slow suite runs it)
#
# Steps, most important first, each under its own `timeout` and never past the session's deadline:
#   1. the GPU tests (-m gpu)
#   2. paper scale (configs/paper.toml, Scientific): fft, iisan, iisan-cached, then lora, adapter, bitfit,
#      one sweep (one data preparation), STEPS timed steps a method (the record extrapolates the epoch)
#   3. the plain-PyTorch floors
#   4. the report
# After every step, what exists is packed again: $OUT/gpu-session.tgz (results, memory CSVs, logs,
# report; no traces, caches or isolation payloads) and $OUT/summary.txt (one screen). Runs write under
# $WORK (/tmp), never under $OUT: a killed step still leaves the earlier steps' results to come back.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
: "${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
WORK=${GPU_SESSION_WORK:-/tmp/gpu-session}
BUDGET_S=${GPU_SESSION_BUDGET_S:-540}  # 9 minutes of the device call's 10, the rest for the transfer
RESERVE_S=15                           # kept back for the last pack
PY=${PYTHON:-python3}
rm -rf "$WORK" && mkdir -p "$WORK/paper" "$WORK/logs"
STEPLOG="$WORK/steps.tsv"
printf 'step\tstatus\tseconds\tlimit_s\n' >"$STEPLOG"

if [ -d .whl ] && [ "$DRY" = 0 ]; then  # what a GPU machine without a package index lacks (scripts/gpu_carry.sh)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$WORK/logs/pip.log" 2>&1 || echo "pip install from .whl failed (see logs/pip.log)" >>"$WORK/logs/pip.log"
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" IISAN_BERT_VOCAB="$PWD/.whl/bert-vocab.txt"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export IISAN_BENCH_CACHE="$WORK/cache"

if [ "$DRY" = 1 ]; then  # the same steps, small: fp32 (bf16 matmuls are slow on CPU), 3 floor steps
  STEPS=6
  FLOOR_STEPS=3
  DATA=(--dataset synthetic --backbone tiny --device cpu --precision fp32 --set data.synthetic.users=120
        --set data.synthetic.items=80 --set data.image_size=32 --set train.batch_size=16
        --set eval.eval_batch_size=64 --set eval.item_batch_size=64)
else
  STEPS=60  # + 3 warm-up steps: 57 timed steps a method for p50/p90
  FLOOR_STEPS=10
  DATA=(--dataset .data/Scientific)
fi
CFG=(--config configs/paper.toml "${DATA[@]}" --set "train.max_steps_per_epoch=$STEPS")

pack() {
  (cd "$WORK" && tar czf "$OUT/gpu-session.tgz.tmp" --exclude='traces' --exclude='cache' --exclude='.isolate-*' \
     --exclude='*.pt' steps.tsv logs paper 2>/dev/null) && mv "$OUT/gpu-session.tgz.tmp" "$OUT/gpu-session.tgz"
  $PY scripts/gpu_session_summary.py "$WORK" >"$OUT/summary.txt" 2>&1 || true
}

step() {  # step NAME CAP_S COMMAND...: run under min(CAP_S, what is left of the budget)
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - RESERVE_S - SECONDS))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    printf '%s\tskipped (budget spent)\t0\t%s\n' "$name" "$limit" >>"$STEPLOG"
    return
  fi
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
  local rc=$?
  local status="ok"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out"
  [ $rc -ne 0 ] && [ "$status" = ok ] && status="exit $rc"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) "$limit" >>"$STEPLOG"
  pack
}

{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
  >"$WORK/logs/machine.log" 2>&1
step gpu-tests 100 $PY -m pytest -m gpu -p no:cacheprovider -q tests/test_device_paths.py
step paper-scale 390 $PY -m benchmark.cli run "${CFG[@]}" --methods fft,iisan,iisan-cached,lora,adapter,bitfit \
  --out "$WORK/paper" --no-progress --set run.floors='"off"'
step floors 60 $PY -m benchmark.cli floors "${CFG[@]}" --out "$WORK/paper" --steps "$FLOOR_STEPS"
step report 30 $PY -m benchmark.cli report "$WORK/paper"
pack
cat "$OUT/summary.txt"
