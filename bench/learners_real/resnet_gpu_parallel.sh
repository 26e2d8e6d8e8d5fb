#!/bin/bash
# resnet18_w32 on a bench/learners.py sample, on one GPU: `scratch`, from the simulation, and from
# the simulation with its survey randomised while pretraining, one process per (seed, start), all
# at once (nine ResNet processes kept an H200 91-99% busy; each alone is bound by Python's step
# overhead). Each process is cut at LIMIT seconds (default 470); a run saves after every
# fine-tuning, so a cut one keeps the fine-tunings it finished (not its pretraining's N=0 score
# if cut before the first, nor its seconds). The parts are merged into
# $OUT/resnet-neighbours-seeing-h200$TAG.json and .md (OUT defaults to /tmp/galpipe-gpu) and
# packed with their logs into parts$TAG.tar.gz. EPOCHS (default 100) and BUDGETS (default
# 25,50,100,300,all) go to bench/learners.py. From the repository root, on the GPU machine:
#
#     SAMPLE=.gpu/sample.npz SEEDS="0 1 2" OUT=/tmp/out bash bench/learners_real/resnet_gpu_parallel.sh
#
# The merged .md's "seconds" per learner is one part's; the parts' logs hold each process's.
# SAMPLE: `bench/learners.py SAMPLE --export RUN/data/gz2_central_plus_neighbours_seeing` after the
# data step of `galpipe run --config bench/realism/central_half_plus_neighbours_seeing.yaml`.
EPOCHS=${EPOCHS:-100}; LIMIT=${LIMIT:-470}; BUDGETS=${BUDGETS:-25,50,100,300,all}; OUTDIR=${OUT:-/tmp/galpipe-gpu}
SAMPLE=${SAMPLE:-.gpu/sample.npz}
L="central half, + neighbours & seeing"
mkdir -p "$OUTDIR/parts"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
start=$(date +%s)
pids=()
launch() {  # launch PART SEED LABEL LEARNERS.PY-ARGUMENTS...: one process in the background
  local part=$1 seed=$2 label=$3
  shift 3
  timeout "$LIMIT" python3 bench/learners.py "$SAMPLE" --learners "resnet18 w32 stride 2" --label "$label" "$@" \
    --seeds 1 --first-seed "$seed" --epochs "$EPOCHS" --budgets "$BUDGETS" --out "$OUTDIR/parts/$part-$seed" \
    > "$OUTDIR/parts/$part-$seed.log" 2>&1 &
  pids+=($!)
}
for seed in ${SEEDS:-0 1 2}; do
  launch scratch "$seed" "$L" --starts scratch
  launch simulation "$seed" "$L" --starts simulation
  launch survey "$seed" "$L, survey-randomised pretraining" --starts simulation --pretrain-augmentation survey
done
( while sleep 60; do echo "t=$(( $(date +%s) - start )) s: $(cat "$OUTDIR"/parts/*.log | grep -c '"budget"') fine-tunings done"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; done ) &
watcher=$!
wait "${pids[@]}"
kill $watcher 2>/dev/null
echo "all done after $(( $(date +%s) - start )) s"
tail -n 3 "$OUTDIR"/parts/*.log
ls "$OUTDIR"/parts/*.json >/dev/null 2>&1 && python3 bench/learners.py --merge "$OUTDIR/resnet-neighbours-seeing-h200${TAG:-}" "$OUTDIR"/parts/*.json
tar -czf "$OUTDIR/parts${TAG:-}.tar.gz" -C "$OUTDIR" parts && rm -rf "$OUTDIR/parts"
ls -la "$OUTDIR"
