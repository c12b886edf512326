#!/usr/bin/env bash
# gpu_run.sh: the GPU check, run ON the GPU machine from the repo root with gpu_bundle/
# (built by scripts/gpu_check.sh) carried. No cargo or network needed there.
#   1. the CUDA test binaries with ULMFIT_REQUIRE_GPU=1 (a skip is a failure),
#   2. `ulmfit bench lstm --device cuda` on the issue's cases (FP32, and TF32 where listed),
#   3. the AWD-LSTM LM training step (`ulmfit bench lm-step --device cuda`, TF32 and FP32)
#      against the same step in PyTorch (fastai, or its plain-PyTorch twin when fastai is absent),
#   4. PyTorch + cuDNN on the LSTM cases and the ours/PyTorch ratios,
#   5. if time is left, compute-sanitizer memcheck over the FP32 and graph tests (LSTM, LM),
#   6. a GPU preset on gpu_bundle/data: `ulmfit run configs/trec-gpu.toml` (WikiText-2 ->
#      TREC-6), its smoke version (2 epochs per stage), or configs/imdb-gpu.toml; their
#      results.json and metrics.csv copied into $OUT.
# PARTS picks them: "tests" (1), "bench" (2-4), "sanitizer" (5), "trec", "smoke", "imdb" (6);
# default "tests bench sanitizer". TESTS lists the test binaries to run (default: all). Logs and results go to $OUT (default ./gpu_out); results.md there
# is the summary, printed last. Each step has a timeout and the whole run stays under
# DEADLINE_S seconds (default 350).
set -u

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
B="${BUNDLE:-gpu_bundle}"  # override only for a dry run
DEADLINE_S="${DEADLINE_S:-350}"
PARTS="${PARTS:-tests bench sanitizer}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
START=$(date +%s)
RESULTS="$OUT/results.md"
export ULMFIT_REQUIRE_GPU=1 RUST_BACKTRACE=1 ULMFIT_FIXTURES="$PWD/tests/fixtures"

left() { echo $((DEADLINE_S - ($(date +%s) - START))); }

# step NAME TIMEOUT_S LOG CMD...: runs CMD with min(TIMEOUT_S, time left) into LOG.
step() {
    local name=$1 want=$2 log=$3
    shift 3
    local t
    t=$(left)
    [ "$want" -lt "$t" ] && t=$want
    if [ "$t" -lt 5 ]; then
        echo "| $name | SKIPPED (out of time) |" >>"$RESULTS"
        return 0
    fi
    local s=$(date +%s)
    # SIGTERM at the limit: ulmfit saves its training state at the next step (up to 60 s grace).
    timeout -k 60 "$t" "$@" >>"$log" 2>&1
    local rc=$?
    local verdict=ok
    [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
    [ $rc -eq 124 ] && verdict="TIMED OUT after ${t}s"
    [ $rc -eq 130 ] && verdict="STOPPED at ${t}s, state saved (run again to resume)"
    echo "| $name | $verdict | $(($(date +%s) - s)) s | $(basename "$log") |" >>"$RESULTS"
    echo "[$(date -u +%T)] $name: $verdict"
    return 0
}

chmod +x "$B/ulmfit" "$B"/tests/* 2>/dev/null
if [ ! -x "$B/ulmfit" ]; then
    echo "gpu_run: $B/ulmfit missing: run scripts/gpu_check.sh here first and carry gpu_bundle" | tee "$RESULTS"
    exit 1
fi

{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo '```'
    cat "$B/BUILD_INFO" 2>/dev/null
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -3
    echo '```'
    echo "| step | result | time | log |"
    echo "|---|---|---|---|"
} >"$RESULTS"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available"

# 1. tests (one thread: the GPU tests serialize anyway; output shows in order)
if has tests; then
    for t in ${TESTS:-$(ls "$B/tests")}; do
        step "test $t" 120 "$OUT/test_$t.log" "$B/tests/$t" --test-threads=1 --nocapture
    done
fi

# 6 first when asked for, since it is the long one: a GPU preset (checkpoints stay in /tmp:
# too big to come back; results.json and metrics.csv come back as NAME_*). A run stopped at
# its time limit saved its state; calling this script again on the same (warm) machine
# resumes it.
preset() { # NAME CONFIG
    local run_dir=/tmp/ulmfit-$1 resume=()
    [ -f "$run_dir/state/train_state.json" ] && resume=(--resume)
    step "$1 preset ($2) ${resume[*]}" "${PRESET_S:-400}" "$OUT/$1_run.log" \
        env ULMFIT_DATA="$PWD/$B/data" "$B/ulmfit" run "$2" --out "$run_dir" "${resume[@]}"
    cp "$run_dir/results.json" "$OUT/$1_results.json" 2>/dev/null
    cp "$run_dir/metrics.csv" "$OUT/$1_metrics.csv" 2>/dev/null
}
if has smoke; then
    sed -e 's/^epochs = .*/epochs = 2/' -e 's/^frozen_epochs = .*/frozen_epochs = 1/' \
        configs/trec-gpu.toml >/tmp/trec-gpu-smoke.toml
    preset trec /tmp/trec-gpu-smoke.toml
fi
has trec && preset trec configs/trec-gpu.toml
has imdb && preset imdb configs/imdb-gpu.toml

# 2. our benches, JSON lines into ours.jsonl (text lines go to bench_*.log)
: >"$OUT/ours.jsonl"
if has bench; then
bench() { # NAME SIZES BATCH SEQ [--tf32]
    local name=$1 sizes=$2 batch=$3 seq=$4
    shift 4
    step "bench $name" 60 "$OUT/bench_$name.log" \
        "$B/ulmfit" bench lstm --device cuda --sizes "$sizes" --batch "$batch" --seq "$seq" --json "$@"
    grep '^{' "$OUT/bench_$name.log" >>"$OUT/ours.jsonl"
}
bench 400-1152_fp32 400,1152 64 70
bench 400-1152_tf32 400,1152 64 70 --tf32
bench 1024_fp32 1024,1024 256 100
bench 1024_tf32 1024,1024 256 100 --tf32
bench 512_b1_fp32 512,512 1 200
bench 256_b32_fp32 256,256 32 35

# 3. the LM training step, ours (check vs reference, then stream, parts, graphs) and
# PyTorch's; before the cuDNN comparison, whose LSTM figures GPU run 1 already has
step "lm-step tf32 vs pytorch" 100 "$OUT/lm_step_tf32.log" \
    python3 scripts/bench_lm_step_torch.py --device cuda --tf32 --steps 20 --ours "$B/ulmfit"
step "lm-step ours tf32 (parts)" 40 "$OUT/lm_step_ours_tf32.log" \
    "$B/ulmfit" bench lm-step --device cuda --tf32 --steps 20
step "lm-step ours fp32 (parts)" 40 "$OUT/lm_step_ours_fp32.log" \
    "$B/ulmfit" bench lm-step --device cuda --steps 20

# 4. PyTorch + cuDNN, same cases, and the ratios
step "pytorch cudnn" 150 "$OUT/torch.log" \
    python3 scripts/bench_lstm_cudnn.py --ours "$OUT/ours.jsonl" --json "$OUT/torch.jsonl"

fi

# 5. memory checker over the kernels (skips the OOM test: a refused allocation is reported)
if ! has sanitizer; then
    :
elif command -v compute-sanitizer >/dev/null; then
    step "compute-sanitizer memcheck lm" 60 "$OUT/sanitizer_lm.log" \
        compute-sanitizer --tool memcheck --error-exitcode 3 "$B/tests/lm_vs_ref" \
        --test-threads=1 --skip tf32 --skip loss_decreases --skip repeat
    step "compute-sanitizer memcheck" 90 "$OUT/sanitizer.log" \
        compute-sanitizer --tool memcheck --error-exitcode 3 "$B/tests/lstm_vs_ref" \
        --test-threads=1 --skip out_of_memory --skip tf32
else
    echo "| compute-sanitizer | not installed |" >>"$RESULTS"
fi

{
    echo
    echo "## tests"
    echo '```'
    grep -h -E "^test |test result|skip:|running on" "$OUT"/test_*.log
    echo '```'
    echo "### max differences, FP32, largest shape (all shapes in test_lstm_vs_ref.log)"
    echo '```'
    grep -m1 -A10 "h: 96 } graphs false" "$OUT/test_lstm_vs_ref.log"
    echo '```'
    for log in "$OUT"/test_*.log; do
        if grep -q "panicked" "$log"; then
            echo "### failures in $(basename "$log")"
            echo '```'
            grep -h -A2 "panicked" "$log" | head -40
            echo '```'
        fi
    done
    echo "## ours (median ms)"
    echo '```'
    cat "$OUT/ours.jsonl"
    grep -h -E "^error|warning" "$OUT"/bench_*.log
    echo '```'
    echo "## ours vs PyTorch + cuDNN"
    echo '```'
    cat "$OUT/torch.log" 2>/dev/null
    echo '```'
    echo "## AWD-LSTM LM step: ours vs PyTorch (TF32), and our parts"
    echo '```'
    cat "$OUT/lm_step_tf32.log" 2>/dev/null | grep -v -i warn
    cat "$OUT/lm_step_ours_tf32.log" "$OUT/lm_step_ours_fp32.log" 2>/dev/null
    echo '```'
    echo "### LM test losses and max differences (first case; all in test_lm_vs_ref.log)"
    echo '```'
    grep -m12 -E "step [12]: loss|^  (loss|grad emb|grad w_hh0|h_n0) " "$OUT/test_lm_vs_ref.log"
    echo '```'
    for p in trec imdb; do
        [ -f "$OUT/${p}_run.log" ] || continue
        echo "## $p preset"
        echo '```'
        grep -E "epoch|test error|error:|corpus|training on" "$OUT/${p}_run.log" | tail -60
        cat "$OUT/${p}_results.json" 2>/dev/null
        echo '```'
    done
    echo "## sanitizer (tail)"
    echo '```'
    tail -5 "$OUT/sanitizer.log" 2>/dev/null
    tail -5 "$OUT/sanitizer_lm.log" 2>/dev/null
    echo '```'
    echo "total $(($(date +%s) - START)) s"
} >>"$RESULTS"
cat "$RESULTS"
# Only 8 files come back from the device machine: keep results.md and ours.jsonl, pack the logs.
(cd "$OUT" && tar czf logs.tgz --remove-files $(ls | grep -v -E '^(results\.md|ours\.jsonl|logs\.tgz|(trec|imdb)_(results\.json|metrics\.csv))$'))
