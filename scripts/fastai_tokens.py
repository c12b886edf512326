"""Tokenize imdb_sample and TREC-6 with fastai's own tokenizer and save the tokens as a fixture.

Runs fastai v2's default pipeline (`tokenize_texts`: the rules in `defaults.text_proc_rules`, then
`WordTokenizer` = `SpacyTokenizer` on `spacy.blank("en")`, then `replace_space`), the same path
`Tokenizer.from_df` takes, and writes crates/text/tests/fixtures/fastai_tokens.txt.gz:
one document per line, `source<TAB>index<TAB>tokens joined by spaces`, with `\\`, newline, tab,
carriage return and space inside a token escaped as `\\\\`, `\\n`, `\\t`, `\\r`, `\\s`.
The Rust test `tests/fastai_agreement.rs` reads the same texts and compares token by token.

It also writes fastai's `make_vocab` over the imdb_sample tokens (defaults, and max_vocab=100)
to fixtures/fastai_vocab_imdb_sample.txt: `max_vocab min_freq<TAB>escaped tokens joined by spaces`.

Usage: OMP_NUM_THREADS=2 python3 scripts/fastai_tokens.py [DATA_DIR]
"""
import gzip
import os
import sys

import pandas as pd
from collections import Counter

from fastai.text.all import make_vocab, tokenize_texts, WordTokenizer

data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ULMFIT_DATA", "/work/shared/data")
out = os.path.join(os.path.dirname(__file__), "..", "crates", "text", "tests", "fixtures", "fastai_tokens.txt.gz")


def trec(path):
    # ISO-8859-1; `LABEL question` per line.
    with open(path, encoding="latin-1", newline="\n") as f:
        return [line.rstrip("\n").split(" ", 1)[1] for line in f]


def escape(tok):
    return (tok.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "\\r").replace(" ", "\\s"))


sources = [
    ("imdb_sample", pd.read_csv(os.path.join(data, "imdb_sample", "texts.csv"))["text"].astype(str).tolist()),
    ("trec_train", trec(os.path.join(data, "trec", "train_5500.label"))),
    ("trec_test", trec(os.path.join(data, "trec", "TREC_10.label"))),
]
fixtures = os.path.dirname(out)
with gzip.open(out, "wt", encoding="utf-8", newline="\n", compresslevel=9) as f:
    for name, texts in sources:
        toks = tokenize_texts(texts, n_workers=2, tok=WordTokenizer())
        for i, t in enumerate(toks):
            f.write(f"{name}\t{i}\t{' '.join(escape(x) for x in t)}\n")
        print(name, len(texts), "documents", sum(len(t) for t in toks), "tokens")
        if name == "imdb_sample":
            count = Counter(toks.concat())
            with open(os.path.join(fixtures, "fastai_vocab_imdb_sample.txt"), "w", encoding="utf-8") as v:
                for max_vocab, min_freq in [(60000, 3), (100, 3), (1000, 1)]:
                    vocab = make_vocab(count, min_freq=min_freq, max_vocab=max_vocab)
                    v.write(f"{max_vocab} {min_freq}\t{' '.join(escape(x) for x in vocab)}\n")
print("wrote", out, os.path.getsize(out), "bytes")
