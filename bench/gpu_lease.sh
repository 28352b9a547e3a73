#!/usr/bin/env bash
# One device lease, planned to its deadline: the GPU figures and as many real-data runs as fit.
#
#   there:  bash bench/gpu_lease.sh first SECONDS    # bench, paper-000 DAG alone, cached re-run,
#                                                    # then paper 002 + the recipes side by side
#           bash bench/gpu_lease.sh more SECONDS     # resume paper 002 + the recipes (warm machine)
#
# Results collect in /tmp/res (kept while the machine stays warm) and come back as $OUT/res.tgz,
# with the short logs also copied to $OUT. The recipes run at RECIPE_EPOCHS (default 40) epochs.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: bash bench/gpu_lease.sh first|more SECONDS}
deadline=$((SECONDS + ${2:?seconds})) FINAL=${OUT:-/tmp/gpu_out}
export OUT=/tmp/res PYTHONUNBUFFERED=1 FER_WANDB=off OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$PWD TIMEFORMAT=%R
mkdir -p "$OUT" "$FINAL"
note() { echo "$(date +%T) [$SECONDS s] $*" | tee -a "$OUT/times.txt"; }
# at most $1 seconds, keeping $2 seconds back for what follows; at least 1
cap() { local l=$((deadline - SECONDS - $2)); echo $(( l < $1 ? (l > 1 ? l : 1) : $1 )); }

if [ "$what" = first ]; then
  STEP_TIMEOUT=$(cap 120 300) BENCH_ARGS="--images 32768" bash bench/gpu_session.sh bench > /dev/null
  note "bench done"
  JOBS=${FUSION_JOBS:-3} STEP_TIMEOUT=$(cap 270 150) bash bench/gpu_session.sh fusion
  note "paper-000 DAG done or stopped"
  cp "$OUT/fusion.log" "$OUT/fusion_first.log"
  { time timeout "$(cap 60 120)" python3 -m fer_lightning pipeline run configs/pipelines/fer2013_fusion.yaml --data /tmp/fer2013.csv \
      --out runs/gpu/fusion --jobs "${FUSION_JOBS:-3}" > "$OUT/cached.log" 2>&1; } 2>> "$OUT/cached_seconds.txt"
  note "re-run of the paper-000 DAG: $(tail -1 "$OUT/cached_seconds.txt") s"
fi
STEP_TIMEOUT=$(cap 600 25) bash bench/gpu_session.sh vgg1x1 > /dev/null &
vgg=$!
STEP_TIMEOUT=$(cap 600 25) JOBS=${RECIPE_JOBS:-4} PIPE_ARGS="--set trainer.max_epochs=${RECIPE_EPOCHS:-40}" \
  bash bench/gpu_session.sh recipes > /dev/null
wait $vgg
note "paper 002 and recipes done or stopped"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
tar czf "$FINAL/res.tgz" -C "$OUT" .
cp "$OUT"/times.txt "$OUT"/bench.log "$FINAL"/ 2>/dev/null
for f in "$OUT"/*_report.md; do [ -f "$f" ] && cp "$f" "$FINAL"/; done
ls "$FINAL"
