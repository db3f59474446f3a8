#!/usr/bin/env bash
# Every GPU check of issue 22 in one script, so that a scarce GPU session runs it once and a later one repeats it:
#   tests  the gpu-marked tests (bf16 autocast, channels_last, compile, sinet-train's AMP paths, fp16, GPU
#          embeddings against float64 CPU ones)
#   model  benchmarks/bench_model.py on the GPU beside the released code: fp32, channels_last, bf16, bf16 +
#          compile at 32 and 128 clips per forward (targets: sinet >= 0.95x vreid's throughput, >= 3x the
#          released fp32 throughput)
#   eval   a MARS-sized synthetic dataset (4700 ids: 11,310+ test tracklets, ~680,000 test frames at 256x128,
#          written with all CPUs), benchmarks/bench_eval.py's stage split (decode per worker, transfer, model,
#          pipeline, ranking) at two worker counts, then the whole `python -m reid_eval` (= sinet-eval) run,
#          dense, bf16, compiled, timed end to end (target: under 3 minutes on one H200-class GPU)
#
#   bash benchmarks/gpu_check.sh                # all three stages, logs under $OUT (default runs/gpu_check)
#   bash benchmarks/gpu_check.sh tests model    # some of them
#   SMOKE=1 bash benchmarks/gpu_check.sh        # the same steps on the CPU at toy sizes: checks the script itself
#
# Environment: OUT (log folder), DATA (dataset folder, default /tmp/sinet-bench-data; kept between runs),
# SINET_RELEASED (a checkout of github.com/baist/SINet outside the repository; default .ref when it exists, else
# the released column is left out), WORKERS (decoding processes, default: CPUs - 2).
#
# On this project's lent H200 machine (no network, python3 with torch, timm and most dependencies, but no
# torchreid or gdown), carry the missing packages as wheels and the released code, e.g. here:
#   echo /.whl/ >> .git/info/exclude; echo /.ref/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl gdown beautifulsoup4 soupsieve "timm>=1.0.26"
#   python3 -m pip wheel --no-deps -w .whl torchreid==0.2.5     # an sdist only on PyPI; its wheel is pure Python
#   git --git-dir=/work/.mirror/baist+SINet/repo archive HEAD | (mkdir -p .ref && tar -x -C .ref)
# and run (carry [".whl", ".ref"]; each run at most 10 minutes, so one stage or two per run):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site \
#       && OUT=$OUT bash benchmarks/gpu_check.sh tests model
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-runs/gpu_check}"
DATA="${DATA:-/tmp/sinet-bench-data}"
CPUS="$(nproc)"
WORKERS="${WORKERS:-$(( CPUS > 3 ? CPUS - 2 : 1 ))}"
RELEASED="${SINET_RELEASED:-.ref}"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests model eval)
for stage in "${stages[@]}"; do
    case "$stage" in
    tests | model | eval) ;;
    *) echo "unknown stage '$stage': expected tests, model or eval (none: all three)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"

if [ "${SMOKE:-0}" = 1 ]; then  # toy sizes on the CPU: the same commands, minutes instead of a GPU session
    DEV=cpu; BATCHES=(1); ROUNDS=(--rounds 1 --warmup 0); IDS=4; EVAL_BATCH=2; AMP=off; COMPILE=()
    WORKER_SETS=(1 2); MODELS=(--models vreid_r50 sinet_r50)
else
    DEV=cuda; BATCHES=(32 128); ROUNDS=(--rounds 10 --warmup 3); IDS=4700; EVAL_BATCH=64; AMP=bf16
    COMPILE=(--compile); WORKER_SETS=("$WORKERS"); MODELS=()
    [ "$WORKERS" -ge 2 ] && WORKER_SETS=("$(( WORKERS / 2 ))" "$WORKERS")
fi
released=()
[ -f "$RELEASED/models/resnet.py" ] && released=(--released "$RELEASED")
failed=()

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, time it, remember a failure and go on
    local name=$1; shift
    echo "== $name: $*" | tee "$OUT/$name.log"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(( SECONDS - t0 )) s" | tee -a "$OUT/$name.log"
    [ "$rc" = 0 ] || failed+=("$name")
}

step env python3 -c "
import os, platform, torch, timm, torchreid, sinet_timm, reid_eval
print(platform.python_version(), 'torch', torch.__version__, 'timm', timm.__version__, 'cpus', os.cpu_count())
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
"
if [ "$DEV" = cuda ] && ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA GPU here: run it on the GPU machine, or SMOKE=1 to check the script on the CPU" >&2
    exit 2
fi

for stage in "${stages[@]}"; do
    case "$stage" in
    tests)
        if [ "$DEV" = cuda ]; then
            step gpu_tests python3 -m pytest -q -m gpu -rs -p no:cacheprovider
        else  # no GPU: the same tests skip, which still checks that they are collected
            step gpu_tests python3 -m pytest -q -m gpu -rs -p no:cacheprovider --co
        fi ;;
    model)
        step bench_model python3 benchmarks/bench_model.py --device "$DEV" --batch "${BATCHES[@]}" "${ROUNDS[@]}" \
            "${COMPILE[@]}" "${released[@]}" "${MODELS[@]}" ;;
    eval)
        for w in "${WORKER_SETS[@]}"; do
            step "bench_eval_${w}w" python3 benchmarks/bench_eval.py --device "$DEV" --data "$DATA" --num-ids "$IDS" \
                --gen-workers "$CPUS" --workers "$w" --batch-clips "$EVAL_BATCH" --amp "$AMP" "${COMPILE[@]}"
        done
        step sinet_eval python3 -m reid_eval --model sinet_r50 --no-pretrained --dataset mars --root "$DATA" \
            --mode dense --device "$DEV" --amp "$AMP" --batch-clips "$EVAL_BATCH" --workers "$WORKERS" --no-cache \
            --no-progress --output "$OUT/sinet_eval.json" --overwrite "${COMPILE[@]}" ;;
    esac
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (logs in $OUT)"
    exit 1
fi
echo "all passed; logs in $OUT"
