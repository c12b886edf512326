#!/usr/bin/env python3
"""Times one AWD-LSTM language-model training step in PyTorch, next to
`ulmfit bench lm-step`, on the same shapes in the same run.

The step: fastai `get_language_model(AWD_LSTM, V, awd_lstm_lm_config)` (3 layers
400-1152-1152-400, tied decoder with bias, embedding/input/hidden/output dropout and
WeightDropout on W_hh), cross-entropy + AR (alpha 2, on the dropped output) + TAR (beta 1,
on the raw output) as fastai's RNNRegularizer, clip_grad_norm 0.1, Adam. When fastai is not
installed (or with --plain) the same model is built in plain PyTorch below: EmbeddingDropout
(whole rows), RNNDropout (one mask per sequence), WeightDropout re-applied to W_hh at every
forward, hidden state carried and detached, decoder tied to the embedding.
tokens/s = B*T / median step time.

    OMP_NUM_THREADS=2 python3 scripts/bench_lm_step_torch.py [--device cpu|cuda] [--tf32]
        [--ours target/release/ulmfit] [--plain] [--steps 20] [--frozen]
        [--vocab 33278 --emb 400 --hidden 1152 --layers 3 --batch 64 --seq 70]
"""
import argparse, json, statistics, subprocess, sys, time, warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


class EmbeddingDropout(nn.Module):
    """fastai's: drops whole rows of the embedding matrix (one draw per word per forward)."""

    def __init__(self, emb, p):
        super().__init__()
        self.emb, self.p = emb, p

    def forward(self, words):
        w = self.emb.weight
        if self.training and self.p > 0:
            mask = w.new_empty((w.size(0), 1)).bernoulli_(1 - self.p) / (1 - self.p)
            w = w * mask
        return F.embedding(words, w)


class RNNDropout(nn.Module):
    """fastai's: one mask per sequence, shared over time ([B, 1, C] for batch-first)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)


class WeightDropout(nn.Module):
    """fastai's: keeps W_hh as `weight_hh_l0_raw` and re-drops it into the LSTM every forward."""

    def __init__(self, module, p):
        super().__init__()
        self.module, self.p = module, p
        w = getattr(module, "weight_hh_l0")
        delattr(module, "weight_hh_l0")
        self.register_parameter("weight_hh_l0_raw", nn.Parameter(w.data))
        setattr(module, "weight_hh_l0", w.clone())
        module.flatten_parameters = lambda: None

    def forward(self, *args):
        w = F.dropout(self.weight_hh_l0_raw, p=self.p, training=self.training)
        setattr(self.module, "weight_hh_l0", w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return self.module(*args)


class PlainAwdLstmLM(nn.Module):
    """fastai's AWD_LSTM + LinearDecoder with awd_lstm_lm_config, batch-first; forward
    returns (logits, raw output, dropped output) like fastai's LM."""

    def __init__(self, vocab, emb=400, hid=1152, n_layers=3, input_p=0.25, hidden_p=0.15,
                 weight_p=0.2, embed_p=0.02, output_p=0.1):
        super().__init__()
        self.encoder = nn.Embedding(vocab, emb)
        self.encoder.weight.data.uniform_(-0.1, 0.1)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        sizes = [emb] + [hid] * (n_layers - 1) + [emb]
        self.rnns = nn.ModuleList(
            WeightDropout(nn.LSTM(sizes[l], sizes[l + 1], 1, batch_first=True), weight_p)
            for l in range(n_layers))
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList(RNNDropout(hidden_p) for _ in range(n_layers))
        self.output_dp = RNNDropout(output_p)
        self.decoder = nn.Linear(emb, vocab)
        self.decoder.weight = self.encoder.weight
        nn.init.zeros_(self.decoder.bias)
        self.hidden = None

    def forward(self, x):
        out = self.input_dp(self.encoder_dp(x))
        hidden = self.hidden or [None] * len(self.rnns)
        new_hidden = []
        for l, (rnn, dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            out, h = rnn(out, hidden[l])
            new_hidden.append(tuple(t.detach() for t in h))
            if l != len(self.rnns) - 1:
                out = dp(out)
        self.hidden = new_hidden
        dropped = self.output_dp(out)
        return self.decoder(dropped), out, dropped


def build_model(vocab, emb, hid, n_layers, plain):
    if not plain:
        try:
            from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
            from fastai.text.models.core import get_language_model
            config = dict(awd_lstm_lm_config, emb_sz=emb, n_hid=hid, n_layers=n_layers)
            return get_language_model(AWD_LSTM, vocab, config=config), "fastai"
        except ImportError:
            pass
    return PlainAwdLstmLM(vocab, emb, hid, n_layers), "plain PyTorch"


def lstm_layers(model):
    """The LSTM layers' module list: fastai's `model[0].rnns`, or the plain model's `rnns`."""
    return model[0].rnns if isinstance(model, nn.Sequential) else model.rnns


def time_torch(device, vocab, emb, hid, n_layers, bs, bptt, steps, tf32, plain, frozen):
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    model, kind = build_model(vocab, emb, hid, n_layers, plain)
    if frozen:  # fastai's learn.freeze() on an LM: only the embedding / tied decoder group trains
        for p in lstm_layers(model).parameters():
            p.requires_grad_(False)
    model = model.to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5)
    x = torch.randint(0, vocab, (bs, bptt), device=device)
    y = torch.randint(0, vocab, (bs, bptt), device=device)
    losses = []

    def step():
        opt.zero_grad()
        logits, raw, dropped = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
        loss = loss + 2.0 * dropped.float().pow(2).mean()                       # AR
        loss = loss + 1.0 * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()    # TAR
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        losses.append(loss.item())

    for _ in range(3):  # warm-up (cuDNN plans, allocator)
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times), kind, losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=33278)
    ap.add_argument("--emb", type=int, default=400, help="embedding size (also the last layer's)")
    ap.add_argument("--hidden", type=int, default=1152, help="hidden size of the other layers")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=70)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--frozen", action="store_true",
                    help="LSTM layers frozen: the step of the first LM fine-tuning epoch (CPU)")
    ap.add_argument("--plain", action="store_true", help="plain PyTorch even if fastai is installed")
    ap.add_argument("--ours", default="target/release/ulmfit", help="our binary ('' to skip)")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    tokens = args.batch * args.seq
    ours = None
    if args.ours:
        cmd = [args.ours, "bench", "lm-step", "--device", args.device, "--vocab", str(args.vocab),
               "--emb", str(args.emb), "--hidden", str(args.hidden), "--layers", str(args.layers),
               "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps), "--json"]
        if args.tf32:
            cmd.append("--tf32")
        if args.frozen:
            cmd.append("--frozen")
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode == 0:
            ours = json.loads(run.stdout.strip().splitlines()[-1])
        else:  # still time PyTorch, and say why ours is missing
            print(f"ulmfit-rs failed (rc {run.returncode}): {run.stderr.strip()[-2000:]}")
    secs, kind, losses = time_torch(args.device, args.vocab, args.emb, args.hidden, args.layers,
                                    args.batch, args.seq, args.steps, args.tf32, args.plain, args.frozen)
    torch_tps = tokens / secs
    prec = "tf32" if args.tf32 else "fp32"
    sizes = "-".join(map(str, [args.emb] + [args.hidden] * (args.layers - 1) + [args.emb]))
    frozen = ", LSTM layers frozen" if args.frozen else ""
    print(f"AWD-LSTM LM step, V={args.vocab} {sizes} B={args.batch} T={args.seq}{frozen} on {args.device} ({prec})")
    print(f"  PyTorch ({kind}): {secs * 1e3:9.2f} ms  {torch_tps:10.0f} tokens/s"
          f"  (median of {args.steps}; loss {losses[0]:.3f} -> {losses[-1]:.3f})")
    if ours:
        print(f"  ulmfit-rs:      {ours['ms']:9.2f} ms  {ours['tokens_per_s']:10.0f} tokens/s")
        print(f"  ours/PyTorch:   {ours['tokens_per_s'] / torch_tps:.2f}")


if __name__ == "__main__":
    sys.exit(main())
