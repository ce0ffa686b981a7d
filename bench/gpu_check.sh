#!/usr/bin/env bash
# The GPU picture in one command, within a time budget (default 540 s, GPU_CHECK_SECONDS):
#
#     bash bench/gpu_check.sh                 # from the repository root
#     PYTHON=.venv/bin/python OUT=gpu_out GPU_CHECK_SECONDS=540 bash bench/gpu_check.sh
#
# Each row runs under its own time limit; the limits add up to 485 s, so every row gets its turn
# within the default budget (a row is skipped, and says so, once less than 15 s are left).
# Rows: the demo data (generated once, kept); a short demo schedule on cuda in float32, with
# --amp and with --tf32 true (wall time, best mAP per step); predict.py on cuda with the float32
# run's checkpoints; the checkpoint writer's test on cuda (needs pytest); a tiny --deterministic
# run twice and once killed with SIGKILL and resumed, comparing every checkpoint tensor; torchrun with 2 processes (NCCL, DDP, SyncBatchNorm) when
# two GPUs are visible, else 1; extract_features.py on cuda on a generated clip with random I3D
# weights (needs OpenCV's contrib build); bench_pipeline.py --json on cuda (its data set kept in
# $GPU_CHECK_WORK, default data/gpu_check, between calls) with the keys it reports; one
# THUMOS-size training iteration (bench_model.py).
# Writes one markdown table to stdout and to ${OUT:-gpu_check}/gpu_check.md, every command's
# output to logs/ beside it. Python: $PYTHON, else python3. Stops within seconds, with one line,
# when tensorboardX (after the carried wheels) or a cuda device is missing.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
DIR=${OUT:-gpu_check}
WORK=${GPU_CHECK_WORK:-data/gpu_check}

# a machine without network access: wheels carried in $GPU_CHECK_WHEELS (default wheels/, e.g.
# `pip download tensorboardX -d wheels`) are installed when tensorboardX is missing
WHEELS=${GPU_CHECK_WHEELS:-wheels}
if [ -d "$WHEELS" ] && ! "$PY" -c "import tensorboardX" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" tensorboardX >/dev/null 2>&1
fi

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

mkdir -p "$DIR/logs" "$WORK" || exit 1
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/asmloc_gpu_check.XXXXXX") || exit 1
trap 'rm -rf "$SCRATCH"' EXIT
export TQDM_DISABLE=1
BUDGET=${GPU_CHECK_SECONDS:-540}
START=$(date +%s)
ROWS=()

# run NAME LIMIT_S COMMAND...: runs it with its output in logs/NAME.log; sets WALL and STATUS
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    WALL=-
    if ((left < 15)); then
        STATUS="skipped: the ${BUDGET} s budget is spent"
        return
    fi
    ((limit > left)) && limit=$left
    local tic rc
    tic=$(date +%s.%N)
    if declare -F "$1" >/dev/null; then           # a function of this script: in a bash of its own
        timeout --kill-after 10 "$limit" bash -c "$(declare -f "$1"); \"\$@\"" _ "$@" \
            >"$DIR/logs/$name.log" 2>&1
    else
        timeout --kill-after 10 "$limit" "$@" >"$DIR/logs/$name.log" 2>&1
    fi
    rc=$?
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

# --- the demo data, generated once and kept (data/synthetic_THUMOS14)
run demo_data 30 "$PY" -c "import config, synthetic_data; synthetic_data.ensure_demo_dataset(config.build_args('THUMOS', ['--demo']))"
row "demo data" "synthetic_data.ensure_demo_dataset" "data/synthetic_THUMOS14"

# --- precision: the same short demo schedule in float32, with --amp, with --tf32 true
SHORT=(main_THUMOS.py --demo --device cuda --no_resume --epochs 20 --epochs_per_step 10 --num_steps 1)
run demo_fp32 45 "$PY" "${SHORT[@]}" --checkpoint_root "$SCRATCH/fp32"
row "short demo, float32 (defaults: cuDNN TF32 on, matmul float32)" "python ${SHORT[*]}" \
    "best mAP per step: $(best_maps demo_fp32)"
run demo_amp 45 "$PY" "${SHORT[@]}" --amp --checkpoint_root "$SCRATCH/amp"
row "short demo, --amp (bf16 autocast, losses float32)" "python ${SHORT[*]} --amp" \
    "best mAP per step: $(best_maps demo_amp)"
run demo_tf32 45 "$PY" "${SHORT[@]}" --tf32 true --checkpoint_root "$SCRATCH/tf32"
row "short demo, --tf32 true (matmuls in TF32)" "python ${SHORT[*]} --tf32 true" \
    "best mAP per step: $(best_maps demo_tf32)"

# --- predict.py on cuda with the float32 run's checkpoints
RUN_FP32=$(find "$SCRATCH/fp32" -name config.json -printf '%h\n' 2>/dev/null | head -n 1)
run predict 25 "$PY" predict.py --checkpoint "${RUN_FP32:-missing}" --features data/synthetic_THUMOS14/test \
    --device cuda --out "$SCRATCH/predictions.json"
row "predict.py on cuda" "python predict.py --checkpoint RUN --features data/synthetic_THUMOS14/test --device cuda" \
    "$(tail -n 1 "$DIR/logs/predict.log" | sed "s#$SCRATCH/##")"

# --- the background checkpoint writer on cuda: copies on a side stream, the next step waits on the GPU
if "$PY" -c "import pytest" 2>/dev/null; then
    run writer_cuda 20 "$PY" -m pytest -q -p no:cacheprovider tests/test_checkpoint_files.py -k cuda
    result=$(tail -n 1 "$DIR/logs/writer_cuda.log")
else
    WALL=- STATUS=ok result="skipped: no pytest for $PY"
fi
row "checkpoint copies on a side stream" "pytest tests/test_checkpoint_files.py -k cuda" "$result"

# --- exact runs: --deterministic twice, and once killed with SIGKILL then resumed
TINY=(main_THUMOS.py --demo --device cuda --deterministic --epochs 6 --epochs_per_step 3 --num_steps 1 --eval_freq 3)
run deterministic_1 25 "$PY" "${TINY[@]}" --checkpoint_root "$SCRATCH/det1"
det1=$STATUS
run deterministic_2 25 "$PY" "${TINY[@]}" --checkpoint_root "$SCRATCH/det2"
[[ $det1 == ok ]] || STATUS=$det1
same=$(cmp -s <(grep -o 'mAP@tIoU.*' "$DIR/logs/deterministic_1.log") \
              <(grep -o 'mAP@tIoU.*' "$DIR/logs/deterministic_2.log") && echo identical || echo DIFFERENT)
row "--deterministic, run twice" "python ${TINY[*]}" "every evaluation line $same"

# killed: SIGKILL once the second epoch's line is out (its checkpoint being written in the
# background), then the same command to the end; its checkpoints against the first straight run's
killed_then_resumed() {   # PYTHON SCRATCH COMMAND...
    local py=$1 scratch=$2
    shift 2
    "$py" "$@" --checkpoint_root "$scratch/det3" >"$scratch/killed.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        grep -q 'epoch 1 |' "$scratch/killed.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null && echo "killed with SIGKILL after $(grep -c ' epoch ' "$scratch/killed.log") epoch lines"
    wait "$pid" 2>/dev/null
    "$py" "$@" --checkpoint_root "$scratch/det3" || return 1
    "$py" - "$scratch/det1" "$scratch/det3" <<'EOF'
import glob, os, sys
import torch
def tensors(obj, prefix=""):
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from tensors(value, f"{prefix}/{index}")
def states(root):
    folder = os.path.dirname(glob.glob(f"{root}/**/config.json", recursive=True)[0])
    return {name: torch.load(os.path.join(folder, name), weights_only=False, map_location="cpu")
            for name in sorted(os.listdir(folder)) if name.endswith(".pth")}
def weights(state):
    return dict(tensors({key: state[key] for key in ("model_state_dict", "optimizer")}))
straight, resumed = states(sys.argv[1]), states(sys.argv[2])
assert set(straight) == set(resumed), (sorted(straight), sorted(resumed))
different = [f"{name}{key}" for name in straight
             for key, value in weights(straight[name]).items()
             if not torch.equal(value, weights(resumed[name]).get(key, torch.empty(0)))]
count = sum(len(weights(state)) for state in straight.values())
print(f"checkpoint tensors: {'identical' if not different else 'DIFFERENT: ' + ', '.join(different[:4])}"
      f" ({len(straight)} files, {count} tensors: weights and optimizer state)")
EOF
}
run killed_resumed 35 killed_then_resumed "$PY" "$SCRATCH" "${TINY[@]}"
row "SIGKILL mid-run, then resume (--deterministic)" "python ${TINY[*]}; kill -9; rerun" \
    "$(grep -o 'killed with SIGKILL.*' "$DIR/logs/killed_resumed.log"); $(grep -o 'checkpoint tensors: .*' "$DIR/logs/killed_resumed.log" | tail -n 1) vs the first straight run"

# --- torchrun: 2 processes (NCCL, DDP, SyncBatchNorm) when two GPUs are visible
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
NPROC=$((GPUS >= 2 ? 2 : 1))
RUNTINY=(main_THUMOS.py --demo --device cuda --no_resume --epochs 4 --epochs_per_step 2 --num_steps 1 --eval_freq 2)
run torchrun 40 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "${RUNTINY[@]}" \
    --checkpoint_root "$SCRATCH/torchrun"
row "torchrun, $NPROC process(es) ($([[ $NPROC == 2 ]] && echo NCCL || echo 'one GPU visible'))" \
    "torchrun --standalone --nproc_per_node $NPROC ${RUNTINY[*]}" "best mAP per step: $(best_maps torchrun)"

# --- extract_features.py on cuda: a generated 4 s clip, random I3D weights in the published layout
extract_on_cuda() {   # PYTHON FOLDER
    local py=$1 folder=$2
    "$py" - "$folder" <<'EOF' || return 1
import os, sys
sys.path.insert(0, "bench")
import cv2
if not hasattr(cv2, "optflow"):
    sys.exit("OpenCV without the contrib build (cv2.optflow): pip install -r requirements-extract.txt")
import torch
from bench_extract import write_clip
from features import extract
from features.i3d import InceptionI3d
os.makedirs(sys.argv[1], exist_ok=True)
write_clip(os.path.join(sys.argv[1], "clip.mp4"), 4.0, 30.0, (320, 240))
for stream, channels in extract.STREAMS:
    torch.save(InceptionI3d(channels).state_dict(), os.path.join(sys.argv[1], f"{stream}.pt"))
EOF
    "$py" extract_features.py --videos "$folder/clip.mp4" --out "$folder/features" --device cuda \
        --rgb_weights "$folder/rgb.pt" --flow_weights "$folder/flow.pt" || return 1
    "$py" -c "import numpy, sys; a = numpy.load(sys.argv[1]); print(f'features {a.shape} {a.dtype}')" \
        "$folder/features/clip.npy"
}

run extract 35 extract_on_cuda "$PY" "$SCRATCH/extract"
row "extract_features.py on cuda (4 s clip, random weights)" \
    "python extract_features.py --videos clip.mp4 --device cuda ..." "$(tail -n 1 "$DIR/logs/extract.log")"

# --- bench_pipeline.py on cuda: the keys it reports with --json
KEYS="train_host_ms_per_batch train_gather_ms_per_batch checkpoint_wait_s_per_epoch eval_host_ms_per_video forward_videos_per_batch"
PIPE=(bench/bench_pipeline.py --device cuda --quick --work_dir "$WORK/pipeline")
if "$PY" bench/bench_pipeline.py --help 2>/dev/null | grep -q -- --json; then
    run bench_pipeline 90 "$PY" "${PIPE[@]}" --json "$DIR/bench_pipeline.json"
    keys=$("$PY" - "$DIR/bench_pipeline.json" "$KEYS" <<'EOF'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except (OSError, ValueError) as err:
    sys.exit(print(f"no --json output ({type(err).__name__})"))
parts = []
for key in sys.argv[2].split():
    value = data.get(key)
    parts.append(f"{key} {value:.3g}" if isinstance(value, (int, float)) else f"{key}: absent")
print("; ".join(parts))
EOF
)
    row "THUMOS pipeline on cuda (bench_pipeline --json)" "python ${PIPE[*]} --json F" "$keys"
else
    run bench_pipeline 90 "$PY" "${PIPE[@]}"
    row "THUMOS pipeline on cuda" "python ${PIPE[*]}" \
        "bench_pipeline.py has no --json: the keys ($KEYS) are absent; $(grep -o 'estimated THUMOS schedule.*' "$DIR/logs/bench_pipeline.log" | tail -n 1)"
fi

# --- one THUMOS-size training iteration
run bench_model 25 "$PY" bench/bench_model.py --device cuda
row "one THUMOS-size training iteration" "python bench/bench_model.py --device cuda" \
    "$(grep -E '^(fast|dense) *:|speed-up' "$DIR/logs/bench_model.log" | cut -c1-70 | paste -sd ';' | sed 's/;/; /g')"

INFO=$("$PY" -c "import torch; print(f'{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, cuda {torch.version.cuda}')" 2>/dev/null || echo "device unknown")
{
    echo "## GPU check: $INFO, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "| check | command | wall s | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Total $(($(date +%s) - START)) s of a ${BUDGET} s budget; each command's output is in $DIR/logs/."
} | tee "$DIR/gpu_check.md"
