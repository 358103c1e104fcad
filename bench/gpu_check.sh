#!/usr/bin/env bash
# The GPU measurements of docs/gpu.md as one script, for a lent machine with little time: the CUDA
# tests, extraction rates, one real cache, the grid's paper run in float32 and float16, seconds per
# epoch. Each step runs only while time is left (BUDGET seconds from the start), most important first;
# the numbers go to $RESULTS/summary.tsv and the logs beside it. Last, a grid of eight single-layer runs
# with one worker and with four.
#
#   DATA_ROOT=../shared/data/emodb_full NOISE=../shared/data/noise/babble bash bench/gpu_check.sh
#
# NSER="python -m pipeline.cli" runs the CLI from a checkout without installing it.
set -u
DATA_ROOT=${DATA_ROOT:-../shared/data/emodb_full}
NOISE=${NOISE:-../shared/data/noise/babble}
WORK=${WORK:-/tmp/nser_gpu_check}
RESULTS=${RESULTS:-$WORK/results}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-480}
MEASURE=${MEASURE:-128}
EPOCHS=${EPOCHS:-50}
LIMIT=${LIMIT:-}
NSER=${NSER:-nser}
PY=${PY:-python}
mkdir -p "$WORK" "$RESULTS"
START=$(date +%s)
SUMMARY=$RESULTS/summary.tsv
printf 'step\tseconds\tstatus\n' > "$SUMMARY"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME NEEDED_SECONDS COMMAND...: run when NEEDED_SECONDS are left, stopped when the budget ends.
# REQUIRES (a path) skips the step when an earlier step did not make its input.
step() {
  local name=$1 need=$2; shift 2
  local t0 t1 rc
  if [ "$(left)" -lt "$need" ]; then printf '%s\t-\tskipped (%ss left)\n' "$name" "$(left)" >> "$SUMMARY"; return; fi
  if [ -n "${REQUIRES:-}" ] && [ ! -e "$REQUIRES" ]; then
    printf '%s\t-\tskipped (no %s)\n' "$name" "$REQUIRES" >> "$SUMMARY"; return
  fi
  t0=$(date +%s.%N)
  timeout "$(left)" "$@" > "$RESULTS/$name.log" 2>&1; rc=$?
  t1=$(date +%s.%N)
  awk -v n="$name" -v a="$t0" -v b="$t1" -v r="$rc" 'BEGIN { printf "%s\t%.1f\trc=%s\n", n, b - a, r }' >> "$SUMMARY"
  tail -n 3 "$RESULTS/$name.log"
}

{ nvidia-smi -L 2>&1; $PY -c "import torch, transformers, zarr; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'zarr', zarr.__version__)"; } > "$RESULTS/env.log" 2>&1
cat "$RESULTS/env.log"

LIMIT_ARG=${LIMIT:+--limit $LIMIT}
CACHE=$WORK/emodb_babble0_base_$DEVICE.zarr
EXTRACT=(--corpus emodb --data-root "$DATA_ROOT" --model bundled:base --device "$DEVICE")
PAPER_RUN=(--fusion l-adapter --layers enc:blocks,dec:blocks --epochs "$EPOCHS" --batch-size 32 --lr 1e-4
           --length-buckets --folds 0 --device "$DEVICE" --quiet)

[ "$DEVICE" = cuda ] && step cuda_tests 60 $PY -m pytest -q -p no:cacheprovider tests/train/test_resident.py -k "cuda or float16" -rs
# The cache of the grid's babble 0 dB condition, float32 compute as on the CPU, so that the training below
# differs from the CPU runs in docs/results.md only by the device.
step extract_babble0_fp32_b32 60 $NSER extract "${EXTRACT[@]}" --dtype float32 --batch-size 32 $LIMIT_ARG \
  --noise "$NOISE" --snr 0 --out "$CACHE" --quiet
REQUIRES=$CACHE step dump_cache 20 $PY bench/device_drift.py dump "$CACHE" "$RESULTS/cache_dump.npz"
REQUIRES=$CACHE step train_fp32 60 $NSER train --cache "$CACHE" --out "$WORK/run_fp32" "${PAPER_RUN[@]}"
[ "$DEVICE" = cuda ] && REQUIRES=$CACHE step train_fp16 60 $NSER train --cache "$CACHE" --out "$WORK/run_fp16" "${PAPER_RUN[@]}" --precision float16
for b in 32 8; do
  for dt in float16 float32; do
    step "rate_${dt}_b$b" 30 $NSER extract "${EXTRACT[@]}" --dtype "$dt" --batch-size "$b" --noise "$NOISE" --snr 0 \
      --out "$WORK/unused.zarr" --dry-run --measure "$MEASURE"
  done
done
REQUIRES=$CACHE step bench_train 40 $PY bench/train.py --cache "$CACHE" --skip-naive
# Grid workers on one GPU: the eight single-layer runs of docs/results.md ("How much is one fold's number
# worth?") with one worker, then four; the two results.csv must agree.
for w in 1 4; do
  cat > "$WORK/grid_w$w.yaml" <<EOF
out: $WORK/grid_w$w
caches: [$CACHE]
seeds: [0]
folds: ["0"]
per_fold: true
train: {epochs: $EPOCHS, batch_size: 32, lr: 1.0e-4, hidden: 256, length_buckets: true}
subgrids:
  - fusions: [single]
    layers: ["enc:0", "enc:1", "enc:2", "enc:3", "enc:4", "enc:5", "enc:6", "dec:1"]
EOF
  REQUIRES=$CACHE step "grid_workers_$w" 60 $NSER grid "$WORK/grid_w$w.yaml" --no-pack --workers "$w" --quiet
  [ -f "$WORK/grid_w$w/results.csv" ] && cp "$WORK/grid_w$w/results.csv" "$RESULTS/grid_w$w.results.csv"
done

for r in run_fp32 run_fp16; do
  [ -f "$WORK/$r/metrics.json" ] && cp "$WORK/$r/metrics.json" "$RESULTS/$r.metrics.json"
  [ -f "$WORK/$r/log.jsonl" ] && cp "$WORK/$r/log.jsonl" "$RESULTS/$r.log.jsonl"
done
(cd "$RESULTS" && tar -czf logs.tgz --exclude logs.tgz --exclude cache_dump.npz --exclude summary.tsv . 2>/dev/null)
echo; cat "$SUMMARY"
for f in "$RESULTS"/rate_*.log; do
  [ -f "$f" ] && echo "$(basename "$f" .log): $(grep -o -E '[0-9.]+ utt/s' "$f" | tail -1)"
done
for r in run_fp32 run_fp16; do
  [ -f "$RESULTS/$r.metrics.json" ] && $PY -c "import json, sys; m = json.load(open(sys.argv[1])); \
print(sys.argv[2], {k: m.get(k) for k in ('uar', 'macro_f1', 'seconds')}, m.get('data', {}).get('on'))" "$RESULTS/$r.metrics.json" "$r"
done
grep -h -i "speed-up\|epoch" "$RESULTS/bench_train.log" 2>/dev/null | tail -6
