#!/usr/bin/env bash
# One device lease, planned to its deadline: the GPU figures and as many real-data runs as fit.
#
#   there:  bash bench/gpu_lease.sh first SECONDS    # bench, paper-000 DAG alone, cached re-run,
#                                                    # then paper 002 + the recipes side by side
#           bash bench/gpu_lease.sh more SECONDS     # resume those (warm machine)
#
# Results collect in /tmp/res (kept while the machine stays warm) and come back in $OUT: each
# pipeline's <step>_run.tgz (metrics, probabilities, stage logs), logs.tgz (logs and reports).
# FUSION=0 leaves out the paper-000 DAG and its re-runs (measured on the first lease).
# COMPARE_JOBS=1 also trains paper 000's CNNs one after the other (--jobs 1), to measure what
# running them side by side on the one GPU gains. THEN names the gpu_session.sh steps run side by side after the paper-000 DAG (default
# "vgg1x1 recipes"); the recipes, ferplus, sota, cpu and distill steps run RECIPE_EPOCHS (default 40) epochs,
# or EPOCHS_<step> for that step (EPOCHS_cpu=100). BENCH_ARGS are bench/overhead.py's (default
# "--images 32768 --switches"; "--images 32768 --only compiled" for one part), BENCH_CAP its
# seconds (default 120), BENCH=0 leaves it out. What is finished is copied to $OUT as the lease
# goes, so a call that runs out of time still returns it.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: bash bench/gpu_lease.sh first|more SECONDS}
deadline=$((SECONDS + ${2:?seconds})) FINAL=${OUT:-/tmp/gpu_out}
export OUT=/tmp/res PYTHONUNBUFFERED=1 FER_WANDB=off OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$PWD TIMEFORMAT=%R
mkdir -p "$OUT" "$FINAL"
note() { echo "$(date +%T) [$SECONDS s] $*" | tee -a "$OUT/times.txt"; }
# at most $1 seconds, keeping $2 seconds back for what follows; at least 1
cap() { local l=$((deadline - SECONDS - $2)); echo $(( l < $1 ? (l > 1 ? l : 1) : $1 )); }

# copy what is finished to $FINAL: logs and reports together, each run's archive alone (at most 8
# files of 16 MB come back)
ship() {
  tar czf "$FINAL/logs.tgz" -C "$OUT" --exclude='*_run.tgz' .
  cp "$OUT"/times.txt "$OUT"/bench.log "$OUT"/*_run.tgz "$FINAL"/ 2>/dev/null
  return 0
}

# install jsonargparse and unpack FER2013 once, before any steps run side by side
bash bench/gpu_session.sh setup > /dev/null || exit 1
note "set up"
if [ "$what" = first ] && [ "${BENCH:-1}" = 1 ]; then
  STEP_TIMEOUT=$(cap "${BENCH_CAP:-120}" 300) BENCH_ARGS="${BENCH_ARGS:---images 32768 --switches}" \
    bash bench/gpu_session.sh bench > /dev/null
  note "bench done"
  ship
fi
if [ "$what" = first ] && [ "${FUSION:-1}" = 1 ]; then  # FUSION=0: leave paper 000's DAG out
  # GPU utilisation while the DAG runs (its CNNs side by side), sampled every 0.2 s
  nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 200 > "$OUT/dag_util.txt" 2>/dev/null &
  smi=$!
  JOBS=${FUSION_JOBS:-3} STEP_TIMEOUT=$(cap 270 150) bash bench/gpu_session.sh fusion
  kill $smi 2>/dev/null
  ship
  note "paper-000 DAG done or stopped; GPU utilisation while it ran (probes included): mean $(awk -F", " '{s+=$2; n++} END {if (n) printf "%.0f %% of %d samples", s/n, n}' "$OUT/dag_util.txt")"
  cp "$OUT/fusion.log" "$OUT/fusion_first.log"
  { time timeout -k 15 "$(cap 60 120)" python3 -m fer_lightning pipeline run configs/pipelines/fer2013_fusion.yaml --data /tmp/fer2013.csv \
      --out runs/gpu/fusion --jobs "${FUSION_JOBS:-3}" > "$OUT/cached.log" 2>&1; } 2>> "$OUT/cached_seconds.txt"
  note "re-run of the paper-000 DAG: $(tail -1 "$OUT/cached_seconds.txt") s"
  if [ "${COMPARE_JOBS:-0}" = 1 ]; then  # the three CNNs one after the other, for the side-by-side gain
    { time timeout -k 15 "$(cap 240 150)" python3 -m fer_lightning pipeline run configs/pipelines/fer2013_fusion.yaml \
        --data /tmp/fer2013.csv --out runs/gpu/fusion_jobs1 --jobs 1 --only cnn1 --only cnn2 --only cnn3 \
        > "$OUT/jobs1.log" 2>&1; } 2>> "$OUT/jobs1_seconds.txt"
    note "paper-000 CNNs with --jobs 1: $(tail -1 "$OUT/jobs1_seconds.txt") s (side by side: see fusion.log)"
  fi
fi
# GPU utilisation while the THEN steps train side by side (bigger nets than paper 000's CNNs)
nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 200 >> "$OUT/then_util.txt" 2>/dev/null &
smi=$!
pids=()
for step in ${THEN:-vgg1x1 recipes}; do
  extra=""
  # EPOCHS_<step> (e.g. EPOCHS_cpu=100) overrides RECIPE_EPOCHS for one step
  epochs_var=EPOCHS_$step
  case $step in recipes|ferplus|sota|cpu|distill) extra="--set trainer.max_epochs=${!epochs_var:-${RECIPE_EPOCHS:-40}}" ;; esac
  # MAX_TIME=DD:HH:MM:SS ends each training gracefully (Lightning's max_time): the stage still exports
  # its best checkpoint's results, with epochs_trained in metrics.json; a longer one in `more`
  # continues that training (a stage's resume ignores max_time), the timer counting both calls
  limit=$(cap 600 25)
  if [ -n "${MAX_TIME:-}" ]; then
    max_time=$MAX_TIME
    # A step that starts in this call must end its training before the step's timeout kills it
    # unexported (2026-12-04: paper 004 trained 44 epochs and left nothing): clip MAX_TIME to the
    # timeout less START_MARGIN (the stage's start on the real CSV ~55 s, its export, the rest of the
    # DAG) and less the ten-view scoring that follows the step. Not for a step resumed on a warm
    # machine: Lightning's timer counts the earlier call's training too, so a per-call clip could
    # end it at once.
    if [ ! -d "runs/gpu/$step" ]; then
      rescore=0
      [ -n "${RESCORE_TTA:-}" ] && rescore=${RESCORE_TIMEOUT:-60}
      room=$((limit - ${START_MARGIN:-90} - rescore))
      IFS=: read -r d h m s <<< "$MAX_TIME"
      if (( room > 0 && ((10#$d * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s > room )); then
        max_time=$(printf "00:%02d:%02d:%02d" $((room / 3600)) $((room % 3600 / 60)) $((room % 60)))
        note "$step: MAX_TIME $MAX_TIME clipped to $max_time, to end before the step's ${limit} s timeout"
      fi
    fi
    extra="$extra --set trainer.max_time=$max_time"
  fi
  extra="$extra ${LEASE_ARGS:-}"  # e.g. LEASE_ARGS="--set seed=1": more `pipeline run` options for every step
  STEP_TIMEOUT=$limit JOBS=${RECIPE_JOBS:-4} PIPE_ARGS="$extra" bash bench/gpu_session.sh "$step" > /dev/null &
  pids+=($!)
done
wait "${pids[@]}"
kill $smi 2>/dev/null
note "${THEN:-vgg1x1 recipes}: done or stopped; GPU utilisation meanwhile: mean $(awk -F", " '{s+=$2; n++} END {if (n) printf "%.0f %% of %d samples", s/n, n}' "$OUT/then_util.txt")"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
ship
ls -l "$FINAL"
cat "$OUT"/times.txt; grep -h "FAIL\|PASS\|switch\|time per step" "$OUT"/bench.log; grep -h "acc" "$OUT"/*_report.md | head -40
