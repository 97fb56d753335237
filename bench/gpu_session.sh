#!/usr/bin/env bash
# One GPU session, prepared to run in a single device call of about ten minutes:
#   1. bench/bench_training.py on CUDA (Fashion-MNIST Skinny ch=32 and CIFAR-10-shaped ch=64: eFCN
#      and CNN epochs vs their roofline and vs the authors'-style loop, projected paper protocol);
#   2. as much of the GPU Fashion-MNIST preset (config/gpu-fashion.yaml: 60,000 images on the 40x40
#      canvas, Skinny width 64) as fits in the time left, through the stage scripts (the device image
#      has PyTorch but not Snakemake): the CNN with log-spaced checkpoints, the standard FCN, then
#      from the latest relax time down the embedding of the checkpoint, the eFCN relax run and the
#      control (the CNN continued), each a whole run or none, all under the one shared optimiser.
#
# Usage, from the repository root, with Fashion-MNIST prepared under resources/data (carry it):
#   bash bench/gpu_session.sh OUT_DIR [SECONDS]          # default 540 s for everything
# Writes OUT_DIR/training.md, OUT_DIR/preset_metrics.csv (every run's per-epoch metrics, one table),
# OUT_DIR/embedding.csv (the exactness record of every embedding) and OUT_DIR/session.log (commands,
# wall times, nvidia-smi). NEEDLE_SESSION=smoke shrinks
# everything to a CPU-sized check of this script's plumbing (tests nothing about speed);
# NEEDLE_DATA_DIR and PYTHON override the data folder and the interpreter.
set -euo pipefail
out=${1:?usage: bash bench/gpu_session.sh OUT_DIR [SECONDS]}
budget=${2:-540}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/session.log"
work=$(mktemp -d /tmp/needle-gpu-session.XXXXXX)
export PYTHONPATH="$PWD/workflow/scripts${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
started=$(date +%s)

data_dir=${NEEDLE_DATA_DIR:-resources/data}
if [ "${NEEDLE_SESSION:-}" = smoke ]; then
  device=cpu bench_args=(--device cpu --rounds 1 --no-authors --train-size 100 --test-size 50)
  preset=(--canvas-size 40 --train-size 100 --test-size 50 --width 4 --threads 1)
  # nets this small stay near chance for a few epochs: the chance rule would end the plumbing early
  judge=(--divergence-chance-epochs 100)
  cnn_epochs=3 relax_epochs=2 checkpoint_points=3 bench_limit=300
else
  device=cuda bench_args=(--device cuda --rounds 3)
  preset=(--canvas-size 40 --width 64) judge=()
  cnn_epochs=20 relax_epochs=20 checkpoint_points=6 bench_limit=300
fi
bench_args+=(--data-dir "$data_dir")
data=(--dataset fashion-mnist --data-dir "$data_dir" --model skinny "${preset[@]}" --device "$device")
common=("${data[@]}" --lr 0.1 --batch-size 250 --eval-batch-size 2000 --on-divergence record
        "${judge[@]}")

left() { echo $(( budget - ($(date +%s) - started) )); }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log the command and its wall time
  local name=$1 limit=$2; shift 2
  local begin=$(date +%s) status=0
  echo "== $name (limit ${limit} s): $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1 || status=$?
  echo "== $name: exit $status after $(( $(date +%s) - begin )) s" >>"$log"
  return $status
}

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"; "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } >"$log" 2>&1

step bench "$bench_limit" "$python" bench/bench_training.py "${bench_args[@]}" --out "$out" || true

runs=() records=()
if step cnn "$(left)" "$python" workflow/scripts/train_cnn.py "${common[@]}" --epochs "$cnn_epochs" \
    --checkpoint-points "$checkpoint_points" --checkpoint-dir "$work/cnn/checkpoints" --metrics "$work/cnn/metrics.csv"; then
  runs+=("cnn,-,$work/cnn/metrics.csv")
  if step fcn "$(left)" "$python" workflow/scripts/train_fcn.py "${common[@]}" --epochs "$relax_epochs" \
      --metrics "$work/fcn/metrics.csv"; then
    runs+=("fcn,-,$work/fcn/metrics.csv")
  fi
  # Latest relax time first: the runs the paper's claims turn on, before the early ones.
  for t in $(ls "$work/cnn/checkpoints" | sed 's/epoch\([0-9]*\)\.pt/\1/' | sort -rn); do
    [ "$(left)" -gt 30 ] || break
    checkpoint="$work/cnn/checkpoints/epoch$t.pt"
    step "embed efcn at $t" "$(left)" "$python" workflow/scripts/embed.py "${data[@]}" --arm efcn \
        --relax-time "$t" --checkpoint "$checkpoint" --embedded "$work/efcn$t/embedded.pt" \
        --record "$work/efcn$t/embedding.csv" || continue
    records+=("$work/efcn$t/embedding.csv")
    if step "efcn relaxed at $t" "$(left)" "$python" workflow/scripts/relax.py "${common[@]}" \
        --epochs "$relax_epochs" --arm efcn --relax-time "$t" --start "$work/efcn$t/embedded.pt" \
        --metrics "$work/efcn$t/metrics.csv"; then
      runs+=("efcn,$t,$work/efcn$t/metrics.csv")
    fi
    rm -f "$work/efcn$t/embedded.pt"  # as the workflow's temp(): disk use stays bounded
    [ "$(left)" -gt 30 ] || break
    if step "cnn_continued from $t" "$(left)" "$python" workflow/scripts/relax.py "${common[@]}" \
        --epochs "$relax_epochs" --arm cnn_continued --relax-time "$t" --start "$checkpoint" \
        --metrics "$work/control$t/metrics.csv"; then
      runs+=("cnn_continued,$t,$work/control$t/metrics.csv")
    fi
  done
fi

"$python" - "$out/preset_metrics.csv" "${runs[@]}" <<'EOF'
import sys
import pandas as pd
frames = []
for run in sys.argv[2:]:
    arm, relax_time, path = run.split(",", 2)
    frame = pd.read_csv(path)
    frame.insert(0, "relax_time", relax_time)
    frame.insert(0, "arm", arm)
    frames.append(frame)
table = pd.concat(frames) if frames else pd.DataFrame(columns=["arm", "relax_time"])
table.to_csv(sys.argv[1], index=False)
print(f"{len(frames)} runs -> {sys.argv[1]}")
EOF
"$python" - "$out/embedding.csv" "${records[@]}" <<'EOF'
import sys
import pandas as pd
frames = [pd.read_csv(path) for path in sys.argv[2:]]
(pd.concat(frames) if frames else pd.DataFrame()).to_csv(sys.argv[1], index=False)
EOF
echo "session: $(( $(date +%s) - started )) s of $budget s" >>"$log"
rm -rf "$work"
tail -n 3 "$log"
