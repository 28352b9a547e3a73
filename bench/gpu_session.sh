#!/usr/bin/env bash
# The real-data runs and GPU figures owed to the README, for a session that is lent a GPU machine
# (the `device` tool: 10 minutes a command, 15 minutes of device time per task at present, starts
# included; no network, no wandb/jsonargparse).
#
#   here:   bash bench/gpu_session.sh prepare      # fills the ignored .carry/ (FER2013 pack,
#                                                  # unpacker, jsonargparse wheels; FERPLUS=1: the
#                                                  # FER+ votes too) and checks the 64 MiB
#   there:  bash bench/gpu_session.sh STEP         # with carry: [.carry]
#
# STEP: setup (install and unpack only) | bench (overhead, data path, switches, GPU utilisation) | fusion (paper 000, 40 epochs) |
#       graphs (the same DAG with its three CNNs under model.compile=reduce-overhead: CUDA graphs) |
#       fusion_light (the same, conv dropout 0.1) |
#       vgg1x1 (paper 002) | attention (paper 004) | hybrid (paper 003) | recipes (issue 8) |
#       ferplus (the recipes on FER+ soft votes) | sota (issue 8: VGG + ResNet-18, bf16, both at once) |
#       vggnet (issue 8: the VGG at 100 epochs, plateau and cosine schedules side by side, bf16) |
#       cpu (the 2-core CPU recipe, two narrow VGGs + their fusion, at GPU length) |
#       distill (the six-network CPU ensemble and a narrow VGG distilled from it) |
#       best (the best single-network recipe, 150 epochs, five seeds + their fusion: fer2013_cpu_best)
# PIPE_ARGS adds `pipeline run` options (e.g. "--set trainer.max_epochs=40"; keep them the same to
# resume). JOBS=N runs up to N independent stages side by side (default: the runner's plan).
# A pipeline step stops itself before the 10-minute limit; running the same step again on the
# same warm machine resumes it (finished stages are cached, a training resumes from last.ckpt).
# What comes back in $OUT: <step>.log (per-stage times, DAG wall time) and <step>_report.md.
# Every `timeout` here has `-k`: Lightning traps SIGTERM (its handler only flags the loop to stop
# at its next batch), and on 2026-11-28 a benchmark stopped by its cap during a CUDA-graph compile
# never exited: the lease's 10-minute call ran out with nothing back.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?usage: bash bench/gpu_session.sh prepare|setup|bench|fusion|graphs|fusion_light|vgg1x1|attention|hybrid|recipes|ferplus|sota|vggnet|cpu|distill|best}
SHARED=${SHARED:-../shared}

if [ "$step" = prepare ]; then
  # What travels to the device (tracked files + untracked, unignored ones + the carry) must stay
  # under 64 MiB: the FER2013 pack is 55 MB, the repository ~8 MB (the kept probabilities in
  # results/ grow it; `bench/keep_probs.py --no-train` slims a kept file that is not a teacher).
  # So only what the device lacks: jsonargparse and its two `signatures` packages (it has PyYAML
  # and typing-extensions), and the FER+ votes only for the ferplus step.
  [ -f "$SHARED/data/fer2013/fer2013.pack.xz" ] || { echo "prepare: no $SHARED/data/fer2013/fer2013.pack.xz (SHARED=path/to/shared)" >&2; exit 1; }
  rm -rf .carry && mkdir -p .carry/wheels
  cp "$SHARED/data/fer2013/fer2013.pack.xz" "$SHARED/tools/fer2013_pack.py" .carry/
  [ "${FERPLUS:-0}" = 1 ] && cp "$SHARED/data/fer2013/fer2013new.csv" .carry/
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .carry/wheels \
    jsonargparse==4.53.0 "docstring-parser>=0.17" "typeshed-client>=2.8.2"
  repo=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- | tail -1 | cut -f1)
  carry=$(du -sb .carry | cut -f1)
  echo "travels: $(( (repo + carry) >> 20 )) MiB of 64 (repository $((repo >> 20)) MiB, .carry $((carry >> 20)) MiB)"
  if (( repo + carry > 64 << 20 )); then echo "over the device's 64 MiB: carry less" >&2; exit 1; fi
  exit 0
fi

OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export FER_WANDB=off OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$PWD
python3 -c "import jsonargparse" 2>/dev/null || \
  python3 -m pip install -q --no-index --find-links .carry/wheels "jsonargparse[signatures]"
[ -f /tmp/fer2013.csv ] || python3 .carry/fer2013_pack.py unpack .carry/fer2013.pack.xz /tmp/fer2013.csv
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU") | tee "$OUT/device.txt"

pipeline() {  # pipeline name, then extra `pipeline run` arguments; runs in runs/gpu/$step
  local name=$1
  shift
  set +e
  timeout -k 15 "${STEP_TIMEOUT:-540}" python3 -m fer_lightning pipeline run "configs/pipelines/$name.yaml" --data /tmp/fer2013.csv \
    --out "runs/gpu/$step" --jobs "${JOBS:-auto}" "$@" ${PIPE_ARGS:-} 2>&1 | grep -v "^wandb\|Tip:" | tail -200 > "$OUT/$step.log"
  set -e
  python3 bench/stage_times.py "runs/gpu/$step" >> "$OUT/$step.log"
  # RESCORE_TTA=flip_crops: every finished network's test scores under that TTA too, made here
  # because the checkpoints stay on the device (bench/tta_rescore.py; into runs/gpu/$step/rescored)
  if [ -n "${RESCORE_TTA:-}" ]; then
    local nets=(runs/gpu/"$step"/*/model.ckpt)
    if [ -f "${nets[0]}" ]; then  # no match leaves the glob itself
      timeout -k 5 "${RESCORE_TIMEOUT:-60}" python3 bench/tta_rescore.py "${nets[@]%/model.ckpt}" --skip-existing \
        --data /tmp/fer2013.csv --tta "$RESCORE_TTA" --to "runs/gpu/$step/rescored" >> "$OUT/$step.log" 2>&1 \
        || echo "rescore with $RESCORE_TTA failed or ran out of time: see $OUT/$step.log" | tee -a "$OUT/$step.log"
    fi
  fi
  # metrics, probabilities and stage logs come back; checkpoints, features and fused probabilities
  # (re-made from the members' by the score-fusion stage) stay: a file that comes back is <= 16 MB
  tar czf "$OUT/${step}_run.tgz" --exclude='*.ckpt' --exclude=features.npz --exclude=wandb \
    --exclude='*/ensemble/probs.npz' --exclude='*/score_fusion/probs.npz' "runs/gpu/$step"
  cp "runs/gpu/$step/report/report.md" "$OUT/${step}_report.md" 2>/dev/null \
    || echo "$step: not finished yet: run the step again"
}

case $step in
  setup) ;;  # the install and unpack above alone (gpu_lease.sh runs it before steps run side by side)
  bench) timeout -k 15 "${STEP_TIMEOUT:-540}" python3 bench/overhead.py ${BENCH_ARGS:---switches} 2>&1 | tee "$OUT/bench.log" | tail -40 ;;
  fusion) pipeline fer2013_fusion ;;
  graphs) pipeline fer2013_fusion --set stages.cnn1.params.model.compile=reduce-overhead \
            --set stages.cnn2.params.model.compile=reduce-overhead --set stages.cnn3.params.model.compile=reduce-overhead ;;
  fusion_light) pipeline fer2013_fusion_light_dropout ;;
  vgg1x1) pipeline fer2013_vgg1x1 ;;
  attention) pipeline fer2013_attention ;;
  hybrid) pipeline fer2013_hybrid ;;
  recipes) pipeline fer2013_recipes ;;
  sota) pipeline fer2013_sota --set trainer.precision=bf16-mixed ;;
  vggnet) pipeline fer2013_vggnet_schedules ;;
  cpu) pipeline fer2013_cpu ;;
  distill) pipeline fer2013_cpu_distill ;;
  best) pipeline fer2013_cpu_best ;;
  ferplus) [ -f .carry/fer2013new.csv ] || { echo "ferplus: no .carry/fer2013new.csv: run 'FERPLUS=1 bash bench/gpu_session.sh prepare' here" >&2; exit 2; }
           pipeline fer2013_recipes --set data.init_args.ferplus_csv=.carry/fer2013new.csv \
             --set data.init_args.ferplus_labels=soft ;;
  *) echo "unknown step '$step'" >&2; exit 2 ;;
esac
