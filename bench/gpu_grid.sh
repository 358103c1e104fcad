#!/usr/bin/env bash
# A grid on a lent machine with little time, one test fold at a time (the spec's runs per fold:
# `per_fold` is set here): a fold starts only while the time it is expected to need is left of
# BUDGET seconds (FOLD_SECONDS for the first, then the longest fold so far), so the folds that end
# are whole; a fold cut by the budget keeps its finished runs (run dirs, and records with RECORDS=DIR)
# for the next machine. Then the table of what finished (`--collect`), within the budget too.
# Each fold's wall time is printed as `fold F: N s`.
#
#   BUDGET=420 WORKERS=8 bash bench/gpu_grid.sh grids/emodb_fusions.yaml [nser grid options...]
#
# RECORDS=DIR passes --records DIR; NSER="python3 -m pipeline.cli" runs from a checkout that is not
# installed; FOLDS lists the test folds in order (default 0..4).
set -u
SPEC=$1; shift
BUDGET=${BUDGET:-420}
WORKERS=${WORKERS:-8}
FOLDS=${FOLDS:-0 1 2 3 4}
FOLD_SECONDS=${FOLD_SECONDS:-90}
COLLECT_SECONDS=${COLLECT_SECONDS:-30}  # kept back for the table at the end
KILL_AFTER=10                           # a fold that ignores SIGTERM is killed this much later
NSER=${NSER:-nser}
OPTS=(--set per_fold=true)
[ -n "${RECORDS:-}" ] && OPTS+=(--records "$RECORDS")
OPTS+=("$@")
START=$(date +%s)
left() { echo $(( BUDGET - COLLECT_SECONDS - KILL_AFTER - ($(date +%s) - START) )); }

need=$FOLD_SECONDS
for f in $FOLDS; do
  if [ "$(left)" -lt "$need" ]; then echo "fold $f: not started ($(left) s left, a fold needs ~$need s)"; continue; fi
  t0=$(date +%s)
  # timeout signals its whole process group: a cut fold's Dask workers stop with it
  timeout -k "$KILL_AFTER" "$(left)" $NSER grid "$SPEC" --set "folds=[\"$f\"]" --workers "$WORKERS" --no-pack \
    --quiet "${OPTS[@]}"
  rc=$?
  took=$(( $(date +%s) - t0 ))
  case $rc in
    124|137) echo "fold $f: $took s, rc=$rc (cut by the budget)" ;;
    *) echo "fold $f: $took s, rc=$rc"; [ "$took" -gt "$need" ] && need=$took ;;
  esac
done
timeout -k 5 "$COLLECT_SECONDS" $NSER grid "$SPEC" --collect "${OPTS[@]}"
echo "collect: rc=$?"
