#!/usr/bin/env python3
"""Times torch.nn.LSTM (cuDNN) on the GPU for the cases of scripts/gpu_run.sh and prints
ours/PyTorch ratios read from our `ulmfit bench lstm --device cuda --json` lines.

Timing matches src/cli/bench_cuda.rs: warm-up, then the median of repeats, each bracketed by
torch.cuda.synchronize(). "fwd" is a training forward (autograd on, as ours saves the
activations); "fwd+bwd" adds y.backward(dy). FP32 runs disable TF32 in cuDNN and cuBLAS;
TF32 runs allow both. Ratio = PyTorch ms / our ms (>= 1.0: ours is faster).

Usage: python3 scripts/bench_lstm_cudnn.py --ours OUT/ours.jsonl [--json OUT/torch.jsonl]
"""
import argparse
import json
import statistics
import sys
import time

import torch

# (input, hidden, batch, seq, tf32), the same cases as scripts/gpu_run.sh
CASES = [
    (400, 1152, 64, 70, False),
    (400, 1152, 64, 70, True),
    (1024, 1024, 256, 100, False),
    (1024, 1024, 256, 100, True),
    (512, 512, 1, 200, False),
    (256, 256, 32, 35, False),
]
WARMUP, MIN_REPEATS, MAX_REPEATS, TARGET_S = 3, 10, 100, 1.0


def set_tf32(on):
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def median_ms(fn):
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once = time.perf_counter() - t0
    repeats = max(MIN_REPEATS, min(MAX_REPEATS, int(TARGET_S / max(once, 1e-6))))
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_case(inp, hid, batch, seq, tf32):
    set_tf32(tf32)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(inp, hid).cuda()
    x = torch.randn(seq, batch, inp, device="cuda", requires_grad=True)
    h0 = torch.randn(1, batch, hid, device="cuda") * 0.5
    c0 = torch.randn(1, batch, hid, device="cuda") * 0.5
    dy = torch.randn(seq, batch, hid, device="cuda")

    def fwd():
        lstm(x, (h0, c0))

    def fwd_bwd():
        y, _ = lstm(x, (h0, c0))
        y.backward(dy)
        x.grad = None
        lstm.zero_grad(set_to_none=True)

    return {"fwd": median_ms(fwd), "fwd+bwd": median_ms(fwd_bwd)}


def case_name(inp, hid, batch, seq):
    return f"{inp}-{hid} B{batch} T{seq}"  # LstmCase::name() in src/cli/bench.rs


def read_ours(path):
    """Best (lowest) ms per (case, tf32, pass) over our stream and graph runs."""
    best = {}
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        print(f"cannot read our results {path}: {e}", file=sys.stderr)
        return best
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r["case"], bool(r["tf32"]), r["pass"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, help="our JSON lines")
    ap.add_argument("--json", help="write PyTorch results and ratios here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_lstm_cudnn: torch.cuda is not available")
    gpu = torch.cuda.get_device_name(0)
    print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {gpu}")
    ours = read_ours(args.ours)
    rows, out = [], []
    for inp, hid, batch, seq, tf32 in CASES:
        name = case_name(inp, hid, batch, seq)
        try:
            theirs = bench_case(inp, hid, batch, seq, tf32)
        except Exception as e:  # report and go on with the other cases
            print(f"{name} tf32={tf32}: PyTorch failed: {e}", file=sys.stderr)
            continue
        for pas, tms in theirs.items():
            mine = ours.get((name, tf32, pas))
            oms = mine["ms"] if mine else float("nan")
            ratio = tms / oms if mine else float("nan")
            launch = ("graphs" if mine["graphs"] else "stream") if mine else "-"
            rows.append((name, "tf32" if tf32 else "fp32", pas, oms, launch, tms, ratio))
            out.append({"case": name, "tf32": tf32, "pass": pas, "device": gpu, "torch_ms": tms,
                        "ours_ms": oms, "ours_launch": launch, "ours_over_torch": ratio,
                        "torch_tokens_per_s": batch * seq / (tms * 1e-3)})
    print(f"\n{'case':<22} {'prec':<5} {'pass':<8} {'ours ms':>9} {'(how)':<8} {'torch ms':>9} {'ours/torch':>10}")
    for name, prec, pas, oms, launch, tms, ratio in rows:
        print(f"{name:<22} {prec:<5} {pas:<8} {oms:>9.3f} {launch:<8} {tms:>9.3f} {ratio:>10.2f}")
    print("(ours/torch = PyTorch time / our time; >= 1.0 means ours is faster)")
    if args.json:
        with open(args.json, "w") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
