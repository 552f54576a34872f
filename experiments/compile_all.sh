#!/usr/bin/env bash
# Compiles every stage's paper config for v5p-64 and v5e-256 from this host and prints the per-chip table.
# Needs libtpu (pip install -e ".[tpu]", or PYTHONPATH at a `pip install --target` of it).
# Usage: experiments/compile_all.sh [LOGDIR]   (STAGES / TOPOLOGIES override the lists; TABLE_ONLY=1
# prints the table from the logs already in LOGDIR; FIT_BATCH=1 searches each one's largest global batch within
# 85 % of HBM with `--fit-batch`, four or five compiles each, and reports that batch's step)
# Each compile takes CPU minutes; logs go to LOGDIR (default compile_logs/), one per stage and topology.
set -u
cd "$(dirname "$0")/.."
LOGDIR=${1:-compile_logs}
STAGES=${STAGES:-"ar tokenizer flow_matching flow_vae"}
TOPOLOGIES=${TOPOLOGIES:-"v5p:4x4x4 v5e:16x16"}
mkdir -p "$LOGDIR"
for topo in $TOPOLOGIES; do
  for stage in $STAGES; do
    [ -n "${TABLE_ONLY:-}" ] && continue
    log="$LOGDIR/${stage}_${topo/:/_}.log"
    echo "compiling $stage for $topo -> $log" >&2
    python -m speech_jax.cli compile --config "experiments/$stage/paper.py" --topology "$topo" \
      --hbm-fraction 0.85 --rows 5 ${FIT_BATCH:+--fit-batch} >"$log" 2>&1
    echo "exit $?" >>"$log"
  done
done
echo "| config | topology | mesh | global batch | parameters | optimizer | activations | per chip | of HBM | FLOPs/chip (compiled / model) | roofline step >= | compile |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for topo in $TOPOLOGIES; do
  for stage in $STAGES; do
    log="$LOGDIR/${stage}_${topo/:/_}.log"
    awk -v stage="$stage" -v topo="$topo" '
      / train step compiled for / { match($0, /mesh \{[^}]*\}/); mesh = substr($0, RSTART + 5, RLENGTH - 5)
                                     match($0, /\([0-9.]+ s\)$/); secs = substr($0, RSTART + 1, RLENGTH - 2) }
      /largest global batch that fits:/ { match($0, /fits: [0-9]+/); batch = substr($0, RSTART + 6, RLENGTH - 6) " (largest)" }
      /^  parameters /  { params = $(NF-1) " " $NF }
      /^  optimizer state/ { opt = $(NF-1) " " $NF }
      /^  activations/  { act = $(NF-1) " " $NF }
      /^  total +[0-9]/ { total = $2 " " $3; match($0, /\([0-9.]+ %\)/); share = substr($0, RSTART + 1, RLENGTH - 2) }
      /FLOPs per step per chip/ { fl = $6 " / " $13 }
      /roofline:/ { match($0, /at least [0-9.e+]+ ms/); roof = substr($0, RSTART + 9, RLENGTH - 9) }
      /does not fit|^[A-Za-z_.]*(Error|Exception): |exit [1-9]/ { fail = fail $0 " " }
      END { if (total == "") printf "| %s/paper.py | %s | FAILED: %s |\n", stage, topo, substr(fail, 1, 200);
            else printf "| %s/paper.py | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                        stage, topo, mesh, (batch == "" ? "config" : batch), params, opt, act, total, share, fl,
                        roof, secs }' "$log"
  done
done
