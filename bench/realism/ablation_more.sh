#!/usr/bin/env bash
# The realism ablation again with what its first table left out (issue 14: "which effect moves
# direct transfer, AdaBN and the few-label results"): each named run of the ablation
# (bench/realism/gz2_<effect>.yaml, or "none" for gz2_spirals_whole_frame.yaml) with AdaBN at
# budget 0 and `full` at N = 25, 100 and 300; "none" also with `scratch`, the baseline.
# Each run in a folder of its own under OUT, one after another; then
#   .venv/bin/python bench/realism/ablation_table.py --more none=OUT/none/data/ablation_none \
#       neighbours=OUT/neighbours/data/ablation_neighbours ...
#
#   bash bench/realism/ablation_more.sh OUT none neighbours seeing continuous_arms ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"; shift
galpipe="${GALPIPE:-$here/../../.venv/bin/galpipe}"
for effect in "$@"; do
  folder="$out/$effect"
  mkdir -p "$folder"
  if [ "$effect" = none ]; then
    base="$here/gz2_spirals_whole_frame.yaml"; strategies="[full, scratch]"
  else
    base="$here/gz2_$effect.yaml"; strategies="[full]"
  fi
  cat > "$folder/project.yaml" <<EOF
extends: $base
name: ablation_$effect
label_budgets: [0, 25, 100, 300]
strategies: $strategies
adaptation_strategies: [adabn]
adaptation_budgets: ['0']
EOF
  started=$(date +%s)
  (cd "$folder" && DAGSTER_HOME="$folder/.dagster_home" "$galpipe" run --config "$folder/project.yaml" > run.log 2>&1) \
    && status=ok || status="failed (see $folder/run.log)"
  echo "$effect: $status, $(( $(date +%s) - started )) s"
done
