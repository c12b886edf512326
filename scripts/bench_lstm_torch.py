#!/usr/bin/env python3
"""Times torch.nn.LSTM on the same shapes as `ulmfit bench lstm` and prints ours/PyTorch side by side.

For each case it runs our binary (`ulmfit bench lstm ... --json`) and PyTorch in the same
process run, alternating for `--rounds` rounds, and reports the median of each side.
Tokens/s = B*T per second; GFLOP/s counts 2*4H*(I+H) per token per layer forward and three
times that for forward+backward (the same formula as src/cli/bench.rs).

    OMP_NUM_THREADS=2 python3 scripts/bench_lstm_torch.py                 # the three target cases
    OMP_NUM_THREADS=2 python3 scripts/bench_lstm_torch.py --sizes 128,256 --batch 32 --seq 35
    python3 scripts/bench_lstm_torch.py --device cuda [--tf32]            # GPU: torch.nn.LSTM on cuda

Stacks with different layer sizes run as one nn.LSTM per layer (as AWD-LSTM does); the
forward-only pass runs under torch.no_grad(), forward+backward lets the input require grad
so both sides compute dx.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

# (name, sizes = [input, hidden...], batch, seq): the targets (a), (b), (c).
CASES = [
    ("a", [400, 1152], 64, 70),
    ("b", [400, 1152, 1152, 400], 64, 70),
    ("c", [128, 256], 32, 35),
]


def flop_per_token(sizes):
    return sum(8.0 * h * (i + h) for i, h in zip(sizes[:-1], sizes[1:]))


def time_torch(sizes, batch, seq, device, repeats, warmup):
    """Median seconds of (forward, forward+backward) for a stack of nn.LSTM layers."""
    torch.manual_seed(0)
    layers = [torch.nn.LSTM(i, h).to(device) for i, h in zip(sizes[:-1], sizes[1:])]
    x = torch.randn(seq, batch, sizes[0], device=device)
    dy = torch.randn(seq, batch, sizes[-1], device=device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def fwd():
        with torch.no_grad():
            y = x
            for lstm in layers:
                y, _ = lstm(y)
        sync()

    def fwd_bwd():
        xg = x.detach().requires_grad_(True)
        y = xg
        for lstm in layers:
            y, _ = lstm(y)
        y.backward(dy)
        sync()

    out = []
    for f in (fwd, fwd_bwd):
        for _ in range(warmup):
            f()
        secs = []
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            secs.append(time.perf_counter() - start)
        out.append(statistics.median(secs))
    return out


def time_ours(binary, sizes, batch, seq, device, tf32, repeats, warmup):
    """Median seconds of (forward, forward+backward) from `ulmfit bench lstm --json`, or None."""
    cmd = [binary, "bench", "lstm", "--sizes", ",".join(map(str, sizes)), "--batch", str(batch),
           "--seq", str(seq), "--device", device, "--repeats", str(repeats), "--warmup", str(warmup), "--json"]
    if tf32:
        cmd.append("--tf32")
    if not os.path.exists(binary):
        print(f"warning: our binary {binary} does not exist (cargo build --release, or --bin); PyTorch only",
              file=sys.stderr)
        return None
    res = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    by_pass = {r["pass"]: r for r in rows}
    if res.returncode != 0 or {"fwd", "fwd+bwd"} - by_pass.keys():
        print(f"warning: {' '.join(cmd)} gave no result (exit {res.returncode}): {res.stderr.strip()}; PyTorch only",
              file=sys.stderr)
        return None
    tokens = batch * seq
    return [tokens / by_pass[p]["tokens_per_s"] for p in ("fwd", "fwd+bwd")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="input size then layer sizes, e.g. 400,1152,1152,400 (default: the target cases)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=70)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (cuda only), for both sides")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (cpu)")
    ap.add_argument("--bin", default="target/release/ulmfit", help="our binary")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternate ours/PyTorch this many times")
    ap.add_argument("--json", action="store_true", help="one JSON object per case and pass")
    args = ap.parse_args()

    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    elif args.tf32:
        sys.exit("error: --tf32 applies to --device cuda only")
    torch.set_num_threads(args.threads)

    cases = CASES
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        cases = [("custom", sizes, args.batch, args.seq)]

    env = f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}"
    if args.device == "cuda":
        env += f", {torch.cuda.get_device_name()}, tf32 {args.tf32}"
    if not args.json:
        print(f"# ours vs PyTorch ({env}); median of {args.repeats} after {args.warmup} warm-up, {args.rounds} rounds")
        print(f"{'case':<30} {'pass':<8} {'ours tok/s':>11} {'torch tok/s':>12} {'ours GFLOP/s':>13} {'torch GFLOP/s':>14} {'ours/torch':>10}")
    for name, sizes, batch, seq in cases:
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(time_ours(args.bin, sizes, batch, seq, args.device, args.tf32, args.repeats, args.warmup))
            theirs.append(time_torch(sizes, batch, seq, args.device, args.repeats, args.warmup))
        tokens = batch * seq
        label = f"({name}) {'-'.join(map(str, sizes))} B{batch} T{seq}"
        ours = [r for r in ours if r is not None]
        for k, (pass_, mult) in enumerate([("fwd", 1.0), ("fwd+bwd", 3.0)]):
            o = statistics.median(r[k] for r in ours) if ours else float("nan")
            t = statistics.median(r[k] for r in theirs)
            gf = tokens * flop_per_token(sizes) * mult / 1e9
            if args.json:
                print(json.dumps({"case": label, "pass": pass_, "device": args.device, "ours_tokens_per_s": tokens / o,
                                  "torch_tokens_per_s": tokens / t, "ours_gflops": gf / o, "torch_gflops": gf / t,
                                  "ratio": t / o}))
            else:
                print(f"{label:<30} {pass_:<8} {tokens / o:>11.0f} {tokens / t:>12.0f} {gf / o:>13.1f} {gf / t:>14.1f} {t / o:>10.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
