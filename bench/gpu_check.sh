#!/usr/bin/env bash
# The GPU picture in one command (at most about 8 minutes on one GPU):
#
#     bash bench/gpu_check.sh                 # from the repository root
#     PYTHON=.venv/bin/python OUT=gpu_out bash bench/gpu_check.sh
#
# Runs, each under its own time limit: the THUMOS demo on cuda in fp32 and with --amp (wall time,
# best mAP per step), bench_model.py and bench_attention.py on cuda, bench_pipeline.py on cuda
# with its estimate of the full THUMOS schedule, a one-GPU torchrun smoke run, and two short
# --deterministic runs compared line by line (when main_THUMOS.py has that switch).
# Writes one markdown table to stdout and to ${OUT:-gpu_check}/gpu_check.md, every command's
# output to logs/ beside it. Python: $PYTHON, else python3. Stops within seconds, with one line,
# when tensorboardX or a cuda device is missing.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
DIR=${OUT:-gpu_check}

# the quick checks first (no torch import): the packages are there, a GPU device node exists
"$PY" - <<'EOF' || exit 1
import glob
import sys
from importlib.util import find_spec
for package in ("tensorboardX", "torch"):
    if find_spec(package) is None:
        sys.exit(f"gpu_check: error: {sys.executable} has no {package} (pip install -r requirements.txt)")
if not glob.glob("/dev/nvidia[0-9]*") + glob.glob("/dev/kfd") + glob.glob("/dev/dxg"):
    sys.exit("gpu_check: error: no GPU on this machine (no /dev/nvidia* device); this check needs cuda")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: error: torch {torch.__version__} sees no cuda device (this check needs a GPU)")
EOF

mkdir -p "$DIR/logs" || exit 1
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/asmloc_gpu_check.XXXXXX") || exit 1
trap 'rm -rf "$SCRATCH"' EXIT
BUDGET=${GPU_CHECK_SECONDS:-480}                   # the whole check; each step also has its own limit
START=$(date +%s)
ROWS=()

# run NAME LIMIT_S COMMAND...: runs it with its output in logs/NAME.log; sets WALL and STATUS
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    WALL=-
    if ((left < 20)); then
        STATUS="skipped: the ${BUDGET} s budget is spent"
        return
    fi
    ((limit > left)) && limit=$left
    local tic
    tic=$(date +%s.%N)
    timeout --kill-after 10 "$limit" "$@" >"$DIR/logs/$name.log" 2>&1
    local rc=$?
    WALL=$(awk -v a="$tic" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0) STATUS=ok ;;
        124 | 137) STATUS="timed out after ${limit} s" ;;
        *) STATUS="failed (exit $rc): $(tail -n 1 "$DIR/logs/$name.log" | cut -c1-150 | tr '|' '/')" ;;
    esac
}

row() {   # row CHECK COMMAND RESULT
    ROWS+=("| $1 | \`$2\` | $WALL | $([[ $STATUS == ok ]] && echo "$3" || echo "$STATUS") |")
}

best_maps() { sed -n 's/.*best average mAP per step: \([^(]*\).*/\1/p' "$DIR/logs/$1.log" | tail -n 1; }

DEMO=(main_THUMOS.py --demo --device cuda --no_resume --seed 0)
"$PY" -c "import config, synthetic_data; synthetic_data.ensure_demo_dataset(config.build_args('THUMOS', ['--demo']))" \
    >"$DIR/logs/demo_data.log" 2>&1                       # untimed: the demo data, once

run demo_fp32 120 "$PY" "${DEMO[@]}" --checkpoint_root "$SCRATCH/fp32"
row "demo, cuda fp32" "python ${DEMO[*]}" "best mAP per step: $(best_maps demo_fp32)"
run demo_amp 120 "$PY" "${DEMO[@]}" --amp --checkpoint_root "$SCRATCH/amp"
row "demo, cuda --amp (bf16)" "python ${DEMO[*]} --amp" "best mAP per step: $(best_maps demo_amp)"

run bench_model 60 "$PY" bench/bench_model.py --device cuda
row "one THUMOS-size training iteration" "python bench/bench_model.py --device cuda" \
    "$(grep -E '^(fast|dense) *:|speed-up' "$DIR/logs/bench_model.log" | cut -c1-70 | paste -sd ';' | sed 's/;/; /g')"
run bench_attention 45 "$PY" bench/bench_attention.py --device cuda
row "segment attention alone" "python bench/bench_attention.py --device cuda" \
    "$(awk 'f && NF { printf "%s%s %s: %s vs %s ms", s, $1, $2, $(NF-3), $(NF-2); s="; " } /^size/ { f=1 }' \
        "$DIR/logs/bench_attention.log") (hand-written vs fused)"

PIPE=(bench/bench_pipeline.py --device cuda --num_workers 4 --iters 2 --max_iters 4 --eval_videos 20
      --work_dir "$SCRATCH/pipeline")
run bench_pipeline 170 "$PY" "${PIPE[@]}"
row "THUMOS pipeline and full schedule" "python ${PIPE[*]}" \
    "$(grep -o 'estimated THUMOS schedule.*' "$DIR/logs/bench_pipeline.log" | tail -n 1)"

TINY=(--demo --device cuda --no_resume --epochs 4 --epochs_per_step 2 --num_steps 1 --eval_freq 2)
run torchrun 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 main_THUMOS.py "${TINY[@]}" \
    --checkpoint_root "$SCRATCH/torchrun"
row "torchrun, one GPU" "torchrun --standalone --nproc_per_node 1 main_THUMOS.py ${TINY[*]}" \
    "best mAP per step: $(best_maps torchrun)"

if "$PY" main_THUMOS.py --help 2>/dev/null | grep -q -- --deterministic; then
    run deterministic_1 60 "$PY" main_THUMOS.py "${TINY[@]}" --deterministic --checkpoint_root "$SCRATCH/det1"
    first=$STATUS
    run deterministic_2 60 "$PY" main_THUMOS.py "${TINY[@]}" --deterministic --checkpoint_root "$SCRATCH/det2"
    [[ $first == ok ]] || STATUS=$first
    same=$(cmp -s <(grep -o 'mAP@tIoU.*' "$DIR/logs/deterministic_1.log") \
                  <(grep -o 'mAP@tIoU.*' "$DIR/logs/deterministic_2.log") && echo identical || echo DIFFERENT)
    row "--deterministic, run twice" "python main_THUMOS.py ${TINY[*]} --deterministic" \
        "every evaluation line $same; best mAP per step: $(best_maps deterministic_2)"
else
    WALL=- STATUS=ok
    row "--deterministic" "python main_THUMOS.py --deterministic" "skipped: main_THUMOS.py has no --deterministic"
fi

INFO=$("$PY" -c "import torch; print(f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuda {torch.version.cuda}')")
{
    echo "## GPU check: $INFO, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| check | command | wall s | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Total $(($(date +%s) - START)) s; each command's output is in $DIR/logs/."
} | tee "$DIR/gpu_check.md"
