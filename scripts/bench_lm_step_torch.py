#!/usr/bin/env python3
"""Times one AWD-LSTM language-model training step in PyTorch with fastai's own modules,
next to `ulmfit bench lm-step`, on the same shapes in the same run.

The step: fastai `get_language_model(AWD_LSTM, V, awd_lstm_lm_config)` (3 layers
400-1152-1152-400, tied decoder with bias, embedding/input/hidden/output dropout and
WeightDropout on W_hh), cross-entropy + AR (alpha 2) + TAR (beta 1), clip_grad_norm 0.1,
Adam. tokens/s = B*T / median step time.

    OMP_NUM_THREADS=2 python3 scripts/bench_lm_step_torch.py [--device cpu|cuda] [--ours target/release/ulmfit]
"""
import argparse, json, statistics, subprocess, sys, time

import torch
import torch.nn.functional as F


def time_torch(device, vocab, bs, bptt, steps, tf32):
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    model = get_language_model(AWD_LSTM, vocab, config=dict(awd_lstm_lm_config)).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5)
    x = torch.randint(0, vocab, (bs, bptt), device=device)
    y = torch.randint(0, vocab, (bs, bptt), device=device)

    def step():
        opt.zero_grad()
        logits, raw_outs, outs = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
        loss = loss + 2.0 * outs[-1].float().pow(2).mean()
        h = raw_outs[-1]
        loss = loss + 1.0 * (h[:, 1:] - h[:, :-1]).float().pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=33278)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=70)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--ours", default="target/release/ulmfit", help="our binary ('' to skip)")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    tokens = args.batch * args.seq
    ours = None
    if args.ours:
        cmd = [args.ours, "bench", "lm-step", "--device", args.device, "--vocab", str(args.vocab),
               "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps), "--json"]
        if args.tf32:
            cmd.append("--tf32")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        ours = json.loads(out.strip().splitlines()[-1])
    secs = time_torch(args.device, args.vocab, args.batch, args.seq, args.steps, args.tf32)
    torch_tps = tokens / secs
    print(f"AWD-LSTM LM step, V={args.vocab} B={args.batch} T={args.seq} on {args.device}")
    print(f"  PyTorch+fastai: {secs * 1e3:9.1f} ms  {torch_tps:10.0f} tokens/s")
    if ours:
        print(f"  ulmfit-rs:      {ours['ms']:9.1f} ms  {ours['tokens_per_s']:10.0f} tokens/s")
        print(f"  ours/PyTorch:   {ours['tokens_per_s'] / torch_tps:.2f}")


if __name__ == "__main__":
    sys.exit(main())
