#!/usr/bin/env python3
"""Export a fastai v2 AWD-LSTM (language model or text classifier) as an ulmfit-rs checkpoint.

Reads the weights fastai writes (`learn.save(...)`: `{'model': state_dict, 'opt': ...}`, or a bare
state dict such as the pretrained `wt103` `lstm_fwd.pth`) and its vocabulary (a pickled list, e.g.
`itos_wt103.pkl` or `learn.dls.vocab` = [tokens, classes], or a text file with one token per line
escaped as ulmfit-rs writes it), and writes the directory `ulmfit predict --model DIR` and the
stages' `--from DIR` read (crates/trainer/src/checkpoint.rs):

  model.safetensors  our tensor names, f32, with the `ulmfit.checksum` metadata checkpoint.rs checks
  vocab.txt          fastai's itos in fastai's order, one escaped token per line
  config.toml        [model] sizes inferred from the weights (and for a classifier [classifier]
                     bptt, max_len, lin_ftrs); everything else at our defaults
  classes.txt        classifiers only: one class per line, in the head's output order

Names: fastai's LM names are ours (`0.encoder.weight`, `0.rnns.{l}.weight_hh_l0_raw`,
`0.rnns.{l}.module.{weight_ih,bias_ih,bias_hh}_l0`, `1.decoder.bias`); a classifier's encoder
loses the `0.module.` level, and each head block `1.layers.{k}` keeps its batch norm at `.0` and
has its linear layer written at `.2` (fastai puts it at `.1` when the block has no dropout).
Duplicates fastai keeps of tied or wrapped tensors (`encoder_dp.emb.weight`, `1.decoder.weight`,
`module.weight_hh_l0`, `num_batches_tracked`) are checked and dropped. Anything else is an error
listing what the file holds.

Usage:
  python3 scripts/export_fastai.py WEIGHTS.pth VOCAB.pkl|VOCAB.txt OUT_DIR
      [--classes FILE | --class NAME ...] [--bptt 72] [--max-len 1440] [--trust-pickle]

Pickle files can run code when loaded: `--trust-pickle` is needed for weights that are not plain
tensors (e.g. `learn.export()` files); vocabulary pickles are always unpickled (fastai's format).
"""
import argparse
import json
import os
import pickle
import re
import struct
import sys

import torch

CHECKSUM_KEY = "ulmfit.checksum"
SPECIALS = ["xxunk", "xxpad"]  # ids 0 and 1: our code assumes them (Vocab::unk_id, pad_id)


class NotAwdLstm(ValueError):
    """The file is not a fastai AWD-LSTM; the message lists what it holds."""


# ---------------------------------------------------------------- safetensors with our checksum


def fnv1a_checksum(named_bytes):
    """checkpoint.rs `checksum`: FNV-1a 64 over (name, u64 length, bytes) in name order."""
    h = 0xCBF29CE484222325
    prime, mask = 0x100000001B3, 0xFFFFFFFFFFFFFFFF
    for name, data in sorted(named_bytes, key=lambda x: x[0].encode()):
        for chunk in (name.encode(), struct.pack("<Q", len(data)), data):
            for b in chunk:
                h = ((h ^ b) * prime) & mask
    return f"{h:016x}"


def write_safetensors(path, tensors, metadata=None):
    """Writes `{name: tensor}` (float32 or int32, CPU) as safetensors with our checksum."""
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    items = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in dtypes:
            raise ValueError(f"{name}: dtype {t.dtype} not supported (float32 or int32)")
        items.append((name, dtypes[t.dtype], list(t.shape), t.numpy().tobytes()))
    items.sort(key=lambda x: x[0].encode())
    meta = dict(metadata or {})
    meta[CHECKSUM_KEY] = fnv1a_checksum([(n, b) for n, _, _, b in items])
    header, offset = {"__metadata__": meta}, 0
    for name, dtype, shape, data in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for _, _, _, data in items:
            f.write(data)


# ---------------------------------------------------------------- reading fastai's files


def fastai_safe_globals():
    """Plain data types fastai pickles beside tensors: `learn.save`'s optimizer state holds
    fastcore's `L` and, after `fit_one_cycle`, numpy float scalars."""
    import numpy as np
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    try:
        safe.append(np._core.multiarray.scalar)
    except AttributeError:  # numpy < 2
        safe.append(np.core.multiarray.scalar)
    try:
        from fastcore.foundation import L
        safe.append(L)
    except ImportError:
        pass
    return safe


def load_state_dict(path, trust_pickle=False):
    """The model state dict in a fastai `.pth` (`learn.save` with or without optimizer state)."""
    try:
        with torch.serialization.safe_globals(fastai_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; say what happened
        hint = "" if trust_pickle else " (if it is a trusted pickle of a whole Learner or model, add --trust-pickle)"
        raise NotAwdLstm(f"{path}: cannot read as a PyTorch file: {type(e).__name__}: {e}{hint}") from e
    if hasattr(obj, "model") and hasattr(obj.model, "state_dict"):  # a whole Learner
        obj = obj.model
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kinds = sorted({type(v).__name__ for v in obj.values()}) if isinstance(obj, dict) else []
        raise NotAwdLstm(f"{path}: expected a state dict of tensors, found {type(obj).__name__}"
                         + (f" with values of types {kinds} and keys {list(obj)[:20]}" if kinds else ""))
    return dict(obj)


def unescape(t):
    """ulmfit_text::vocab::unescape."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), t, flags=re.S)


def escape(t):
    """ulmfit_text::vocab::escape."""
    return t.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def load_vocab(path):
    """(itos, classes or None): a pickled list (or `dls.vocab` = [itos, classes]) or a text file."""
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            obj = pickle.load(f)
        obj = list(obj)
        if len(obj) == 2 and all(not isinstance(x, str) for x in obj):
            return [str(t) for t in obj[0]], [str(c) for c in obj[1]]
        return [str(t) for t in obj], None
    with open(path, encoding="utf-8", newline="\n") as f:
        text = f.read()
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [unescape(t) for t in lines], None


# ---------------------------------------------------------------- fastai names -> ours


def describe(sd):
    """One line per tensor: name and shape, for error messages."""
    return "\n".join(f"  {k} {list(v.shape)}" for k, v in sd.items())


def convert(sd):
    """Maps a fastai AWD-LSTM state dict to ours. Returns (kind, tensors, sizes) with kind
    'lm' or 'classifier' and sizes {vocab, emb_sz, n_hid, n_layers[, lin_ftrs, classes]}."""
    sd = {k: v.detach().float().cpu() for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    problems = []
    fail = lambda msg: problems.append(msg)  # noqa: E731
    if "0.module.encoder.weight" in sd:
        kind, enc = "classifier", "0.module."
    elif "0.encoder.weight" in sd:
        kind, enc = "lm", "0."
    else:
        raise NotAwdLstm("not a fastai AWD-LSTM: no `0.encoder.weight` (language model) nor "
                         f"`0.module.encoder.weight` (classifier); the file holds {len(sd)} tensors:\n{describe(sd)}")
    used, out = set(), {}

    def take(name, ours=None):
        used.add(name)
        if ours is not None:
            out[ours] = sd[name]
        return sd[name]

    emb = take(enc + "encoder.weight", "0.encoder.weight")
    if emb.dim() != 2:
        raise NotAwdLstm(f"{enc}encoder.weight has shape {list(emb.shape)}, expected [vocab, emb_sz]:\n{describe(sd)}")
    vocab, emb_sz = emb.shape
    dup = enc + "encoder_dp.emb.weight"
    if dup in sd and not torch.equal(take(dup), emb):
        fail(f"{dup} differs from {enc}encoder.weight (fastai ties them)")
    layers = sorted({int(m.group(1)) for k in sd for m in [re.match(re.escape(enc) + r"rnns\.(\d+)\.", k)] if m})
    if layers != list(range(len(layers))) or not layers:
        raise NotAwdLstm(f"not a fastai AWD-LSTM: LSTM layers under {enc}rnns: {layers or 'none'}, expected "
                         f"0..n-1; the file holds {len(sd)} tensors:\n{describe(sd)}")
    n_layers, hid, n_in = len(layers), [], emb_sz
    for l in layers:
        p = f"{enc}rnns.{l}."
        names = {"w_ih": p + "module.weight_ih_l0", "b_ih": p + "module.bias_ih_l0", "b_hh": p + "module.bias_hh_l0"}
        names["w_hh"] = p + "weight_hh_l0_raw" if p + "weight_hh_l0_raw" in sd else p + "module.weight_hh_l0"
        missing = [n for n in names.values() if n not in sd]
        if missing:
            fail(f"layer {l}: missing {missing}")
            continue
        w_ih, w_hh = sd[names["w_ih"]], sd[names["w_hh"]]
        h = w_hh.shape[1] if w_hh.dim() == 2 else -1
        want = {"w_ih": [4 * h, n_in], "w_hh": [4 * h, h], "b_ih": [4 * h], "b_hh": [4 * h]}
        for key, name in names.items():
            if list(sd[name].shape) != want[key]:
                fail(f"{name}: shape {list(sd[name].shape)}, expected {want[key]} (input {n_in}, hidden {h})")
        ours = f"0.rnns.{l}."
        take(names["w_hh"], ours + "weight_hh_l0_raw")
        for key in ("w_ih", "b_ih", "b_hh"):
            take(names[key], ours + names[key][len(p):])
        stale = p + "module.weight_hh_l0"  # fastai v1 / wt103 keep the un-dropped copy too
        if names["w_hh"] != stale and stale in sd:
            take(stale)
        hid.append(h)
        n_in = h
    if hid and hid[-1] != emb_sz:
        fail(f"last LSTM layer has hidden size {hid[-1]}, expected emb_sz {emb_sz} (fastai's AWD-LSTM)")
    if len(set(hid[:-1])) > 1:
        fail(f"inner LSTM layers have different hidden sizes {hid[:-1]}")
    n_hid = hid[0] if n_layers > 1 else emb_sz
    sizes = {"vocab": vocab, "emb_sz": emb_sz, "n_hid": n_hid, "n_layers": n_layers}
    if kind == "lm":
        if "1.decoder.weight" in sd and not torch.equal(take("1.decoder.weight"), emb):
            fail("1.decoder.weight differs from 0.encoder.weight: an untied decoder is not supported")
        if "1.decoder.bias" not in sd:
            fail("1.decoder.bias is missing (fastai's out_bias=True)")
        elif list(sd["1.decoder.bias"].shape) != [vocab]:
            fail(f"1.decoder.bias: shape {list(sd['1.decoder.bias'].shape)}, expected [{vocab}]")
        else:
            take("1.decoder.bias", "1.decoder.bias")
    else:
        convert_head(sd, take, fail, sizes)
    extra = [k for k in sd if k not in used]
    if extra:
        fail("unexpected tensors: " + ", ".join(f"{k} {list(sd[k].shape)}" for k in extra))
    if problems:
        raise NotAwdLstm(f"not a fastai AWD-LSTM {kind} we can load:\n- " + "\n- ".join(problems)
                         + f"\nthe file holds:\n{describe(sd)}")
    return kind, out, sizes


def convert_head(sd, take, fail, sizes):
    """`1.layers.{k}`: LinBnDrop blocks (BatchNorm1d at .0, optional Dropout, bias-free Linear)."""
    blocks = sorted({int(m.group(1)) for k in sd for m in [re.match(r"1\.layers\.(\d+)\.", k)] if m})
    if blocks != [0, 1]:
        fail(f"head blocks {blocks}: our classifier has exactly two (3*emb_sz -> lin_ftrs -> classes)")
        [take(k) for k in sd if k.startswith("1.layers.")]  # listed below with the whole file
        return
    n_in = 3 * sizes["emb_sz"]
    for k in blocks:
        p = f"1.layers.{k}."
        bn = [p + "0." + s for s in ("weight", "bias", "running_mean", "running_var")]
        lin = [n for n in sd if re.fullmatch(re.escape(p) + r"[12]\.weight", n)]
        if any(n not in sd for n in bn) or len(lin) != 1:
            fail(f"block {k}: expected batch norm {p}0.* and one linear {p}1|2.weight")
            continue
        for n in bn:
            if list(sd[n].shape) != [n_in]:
                fail(f"{n}: shape {list(sd[n].shape)}, expected [{n_in}]")
            take(n, n)
        if p + "0.num_batches_tracked" in sd:
            take(p + "0.num_batches_tracked")
        w = sd[lin[0]]
        if w.dim() != 2 or w.shape[1] != n_in:
            fail(f"{lin[0]}: shape {list(w.shape)}, expected [out, {n_in}]")
            continue
        if lin[0].replace("weight", "bias") in sd:
            fail(f"{lin[0]} has a bias: fastai's LinBnDrop with batch norm has none")
        take(lin[0], p + "2.weight")
        n_in = w.shape[0]
        sizes["lin_ftrs" if k == 0 else "classes"] = n_in


# ---------------------------------------------------------------- writing our checkpoint


def config_toml(kind, sizes, bptt, max_len):
    """Our config.toml: the sizes found; every other key keeps its default."""
    lines = ["# written by scripts/export_fastai.py from a fastai " + kind, "[model]"]
    lines += [f"{k} = {sizes[k]}" for k in ("emb_sz", "n_hid", "n_layers")]
    if kind == "classifier":
        lines += ["", "[classifier]", f"bptt = {bptt}", f"max_len = {max_len}", f"lin_ftrs = {sizes['lin_ftrs']}"]
    return "\n".join(lines) + "\n"


def check_vocab(itos, vocab_rows):
    if len(itos) != vocab_rows:
        raise ValueError(f"the vocabulary has {len(itos)} tokens but the embedding has {vocab_rows} rows")
    if itos[:2] != SPECIALS:
        raise ValueError(f"the vocabulary starts {itos[:2]}; ulmfit-rs needs {SPECIALS} at ids 0 and 1")


def export(weights, vocab_path, out_dir, classes=None, bptt=72, max_len=1440, trust_pickle=False):
    """Reads fastai's files and writes our checkpoint directory; returns (kind, sizes)."""
    kind, tensors, sizes = convert(load_state_dict(weights, trust_pickle))
    itos, pkl_classes = load_vocab(vocab_path)
    check_vocab(itos, sizes["vocab"])
    if kind == "classifier":
        classes = classes or pkl_classes
        if not classes:
            raise ValueError("a classifier needs its classes: --classes FILE, --class NAME ..., or dls.vocab pickle")
        if len(classes) != sizes["classes"]:
            raise ValueError(f"{len(classes)} classes given, the head has {sizes['classes']} outputs")
        if any("\n" in c for c in classes):
            raise ValueError("a class name holds a newline")
    if max_len < bptt:
        raise ValueError(f"--max-len {max_len} must be at least --bptt {bptt}")
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(escape(t) + "\n" for t in itos))
    with open(os.path.join(out_dir, "config.toml"), "w", encoding="utf-8", newline="\n") as f:
        f.write(config_toml(kind, sizes, bptt, max_len))
    if kind == "classifier":
        with open(os.path.join(out_dir, "classes.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(c + "\n" for c in classes))
    return kind, sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", help="fastai .pth (learn.save output or a bare state dict)")
    ap.add_argument("vocab", help="vocabulary: .pkl (itos list or dls.vocab) or text, one token per line")
    ap.add_argument("out_dir", help="checkpoint directory to write")
    ap.add_argument("--classes", help="classifier: file with one class per line, in output order")
    ap.add_argument("--class", dest="class_names", action="append", help="classifier: a class name (repeat)")
    ap.add_argument("--bptt", type=int, default=72, help="classifier BPT3C chunk length (fastai seq_len)")
    ap.add_argument("--max-len", type=int, default=1440, help="classifier max_len (fastai 72*20)")
    ap.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles in WEIGHTS")
    a = ap.parse_args()
    classes = a.class_names
    if a.classes:
        with open(a.classes, encoding="utf-8") as f:
            classes = [line.rstrip("\n") for line in f if line.strip()]
    try:
        kind, sizes = export(a.weights, a.vocab, a.out_dir, classes, a.bptt, a.max_len, a.trust_pickle)
    except (NotAwdLstm, ValueError, OSError) as e:
        sys.exit(f"export_fastai: {a.weights}: {e}")
    if kind == "classifier" and sizes["lin_ftrs"] != 50:
        print(f"note: lin_ftrs = {sizes['lin_ftrs']}; check that your ulmfit build reads classifier.lin_ftrs",
              file=sys.stderr)
    print(f"wrote {kind} {sizes} to {a.out_dir}")


if __name__ == "__main__":
    main()
