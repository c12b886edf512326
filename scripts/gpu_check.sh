#!/usr/bin/env bash
# gpu_check.sh: prepares the GPU check HERE (no GPU needed). Builds the release `ulmfit`
# binary and the release test binaries of ulmfit-cuda, strips them into gpu_bundle/
# (git-ignored), and checks the bundle stays small. The GPU machine has no cargo: it runs
# scripts/gpu_run.sh from the repo root with gpu_bundle/ carried.
#
# It also copies the GPU presets' data from $ULMFIT_DATA into gpu_bundle/data, since the GPU
# machine cannot reach ../shared: DATASETS names them (default "wikitext-2 trec"; the IMDb
# run wants "wikitext-2 imdb"). TEST_BINARIES picks the test binaries: "all" (default), "none",
# or a list; with IMDb's 29 MB a run stays under the 64 MiB it may carry with e.g.
# TEST_BINARIES="lm_vs_ref gpu_lm clas_cuda_vs_cpu parity_fastai".
#
# Usage: scripts/gpu_check.sh            (from anywhere; CARGO_TARGET_DIR is honoured)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
BUNDLE="${BUNDLE:-$ROOT/gpu_bundle}"  # override only for a dry run here
MAX_MIB=60

echo "== building release binaries (target dir $CARGO_TARGET_DIR)"
cargo build --release --bin ulmfit
# The test binaries' paths come from cargo's JSON messages (names carry a hash).
TESTS_JSON="$(mktemp)"
cargo test --release -p ulmfit-cuda --no-run --message-format=json >"$TESTS_JSON"
cargo test --release -p ulmfit-trainer --no-run --message-format=json >>"$TESTS_JSON"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/tests"
cp "$CARGO_TARGET_DIR/release/ulmfit" "$BUNDLE/ulmfit"
[ "${TEST_BINARIES:-all}" = none ] || python3 - "$TESTS_JSON" "$BUNDLE/tests" "${TEST_BINARIES:-all}" <<'EOF'
import json, shutil, sys
src, dst, pick = sys.argv[1], sys.argv[2], sys.argv[3].split()
WANT_TRAINER = ("gpu_lm", "cuda", "parity")  # the trainer's tests with GPU cases
copied = []
for line in open(src):
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        continue
    exe = msg.get("executable")
    if msg.get("reason") == "compiler-artifact" and exe and msg["target"]["kind"] == ["test"]:
        name = msg["target"]["name"]
        if "trainer" in msg["package_id"] and not any(k in name for k in WANT_TRAINER):
            continue
        if pick != ["all"] and name not in pick:
            continue
        shutil.copy(exe, f"{dst}/{name}")
        copied.append(name)
need = {"lstm_vs_ref", "no_driver", "plan_on_cpu", "lm_on_cpu", "lm_replay", "lm_vs_ref", "gpu_lm"}
if pick != ["all"]:
    need = set(pick)
missing = need - set(copied)
if missing:
    sys.exit(f"gpu_check: test binaries not built: {sorted(missing)}")
print("test binaries:", " ".join(sorted(copied)))
EOF
rm -f "$TESTS_JSON"
strip "$BUNDLE/ulmfit"
[ -z "$(ls -A "$BUNDLE/tests")" ] || strip "$BUNDLE"/tests/*

# The data of the GPU presets (the device machine has no ../shared).
DATA="${ULMFIT_DATA:-$ROOT/../shared/data}"
for d in ${DATASETS:-wikitext-2 trec}; do
    mkdir -p "$BUNDLE/data/$d"
    case $d in
        wikitext-2) cp "$DATA"/wikitext-2/wiki.{train,valid}.tokens "$BUNDLE/data/wikitext-2/" ;;
        trec) cp "$DATA"/trec/*.label "$BUNDLE/data/trec/" ;;
        imdb) cp "$DATA"/imdb/aclImdb_labeled.tar.gz "$BUNDLE/data/imdb/" ;;
        *) echo "gpu_check: unknown dataset $d" >&2; exit 1 ;;
    esac
done

{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
    dirty=""
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then dirty=" (uncommitted changes included)"; fi
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo none)$dirty"
    echo "rustc: $(rustc --version)"
    echo "glibc needed: $(objdump -T "$BUNDLE/ulmfit" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)"
} >"$BUNDLE/BUILD_INFO"
cat "$BUNDLE/BUILD_INFO"

# Sanity here: the stripped binaries run, and without a driver the CUDA path is a clean error.
for t in plan_on_cpu no_driver lm_on_cpu lm_replay; do
    if [ -x "$BUNDLE/tests/$t" ]; then "$BUNDLE/tests/$t" -q; fi
done
if "$BUNDLE/ulmfit" bench lstm --device cuda --sizes 16,8 --batch 2 --seq 3 2>"$BUNDLE/.probe"; then
    echo "note: a CUDA driver is present on this machine"
else
    grep -q "use --device cpu" "$BUNDLE/.probe" || { cat "$BUNDLE/.probe"; exit 1; }
    echo "no-driver path: $(cat "$BUNDLE/.probe")"
fi
if "$BUNDLE/ulmfit" bench lm-step --device cuda --vocab 50 --batch 2 --seq 3 --steps 1 2>"$BUNDLE/.probe"; then
    echo "note: a CUDA driver is present on this machine"
else
    grep -q "use --device cpu" "$BUNDLE/.probe" || { cat "$BUNDLE/.probe"; exit 1; }
fi
rm -f "$BUNDLE/.probe"

ls -la "$BUNDLE" "$BUNDLE/tests"
SIZE_KIB=$(du -sk "$BUNDLE" | cut -f1)
echo "bundle: $((SIZE_KIB / 1024)) MiB (limit $MAX_MIB MiB)"
if [ "$SIZE_KIB" -gt $((MAX_MIB * 1024)) ]; then
    echo "gpu_check: bundle too large" >&2
    exit 1
fi
echo "gpu_check: ready. On the GPU machine, from the repo root: bash scripts/gpu_run.sh"
