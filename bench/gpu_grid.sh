#!/usr/bin/env bash
# A grid on a lent machine with little time, one test fold at a time: a fold's runs start only while
# FOLD_SECONDS are left of BUDGET, so the folds that end are whole, and a fold cut by the budget leaves
# its finished runs (records and run dirs) for the next machine. Then the table of what finished
# (`--collect`) and its report. Each fold's wall time is printed as `fold F: N s`.
#
#   BUDGET=420 WORKERS=8 bash bench/gpu_grid.sh grids/emodb_fusions.yaml [nser grid options...]
#
# RECORDS=DIR passes --records DIR; NSER="python3 -m pipeline.cli" runs from a checkout that is not
# installed; FOLDS lists the test folds in order (default 0..4).
set -u
SPEC=$1; shift
BUDGET=${BUDGET:-420}
WORKERS=${WORKERS:-4}
FOLDS=${FOLDS:-0 1 2 3 4}
FOLD_SECONDS=${FOLD_SECONDS:-90}
NSER=${NSER:-nser}
RECORDS_ARG=()
[ -n "${RECORDS:-}" ] && RECORDS_ARG=(--records "$RECORDS")
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

for f in $FOLDS; do
  if [ "$(left)" -lt "$FOLD_SECONDS" ]; then echo "fold $f: not started ($(left) s left)"; continue; fi
  t0=$(date +%s)
  # timeout signals its whole process group: a cut fold's Dask workers stop with it
  timeout -k 10 "$(left)" $NSER grid "$SPEC" --set "folds=[\"$f\"]" --workers "$WORKERS" --no-pack --quiet \
    "${RECORDS_ARG[@]}" "$@"
  rc=$?
  echo "fold $f: $(( $(date +%s) - t0 )) s, rc=$rc$([ $rc -eq 124 ] && echo ' (cut by the budget)')"
done
$NSER grid "$SPEC" --collect "${RECORDS_ARG[@]}" "$@"
echo "collect: rc=$?"
