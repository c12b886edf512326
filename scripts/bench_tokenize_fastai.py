"""Tokenizer throughput, fastai vs ours, on the same IMDb text (all 50,000 labelled reviews).

Times fastai v2's `tokenize_texts` (default rules + SpacyTokenizer, `n_workers` processes, as
`Tokenizer.from_df`/`from_folder` run it) over the reviews read from aclImdb_labeled.tar.gz,
then runs our bench (crates/text/benches/tokenize.rs) with the same number of threads and
prints both MB/s and the ratio. Run the whole script under the shared lock:

    flock /tmp/bench.lock env OMP_NUM_THREADS=2 python3 scripts/bench_tokenize_fastai.py

Options: --workers N (default 2), --repeats N (fastai runs, default 1), --docs N (first N
reviews), --dump PATH (also save fastai's tokens, fixture format, for
`cargo run --release -p ulmfit-text --example compare_fastai_tokens PATH`), --no-ours.
"""
import argparse
import gzip
import os
import re
import resource
import statistics
import subprocess
import tarfile
import time

from fastai.text.all import WordTokenizer, tokenize_texts

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=os.environ.get("ULMFIT_DATA", "/work/shared/data"))
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--repeats", type=int, default=1)
ap.add_argument("--docs", type=int, default=None)
ap.add_argument("--dump", default=None)
ap.add_argument("--no-ours", action="store_true")
args = ap.parse_args()

# Same order as the Rust loader: tar member order (sorted by name), train then test.
pat = re.compile(r"aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")
texts = {"train": [], "test": []}
with tarfile.open(os.path.join(args.data, "imdb", "aclImdb_labeled.tar.gz")) as tar:
    for m in tar:
        g = pat.search(m.name)
        if g:
            texts[g.group(1)].append(tar.extractfile(m).read().decode("utf-8"))
texts = (texts["train"] + texts["test"])[: args.docs]
mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

def cpu_seconds():
    # This process plus its reaped children (the tokenizer worker processes).
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


times, cpus = [], []
for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), cpu_seconds()
    toks = tokenize_texts(texts, n_workers=args.workers, tok=WordTokenizer())
    times.append(time.perf_counter() - t0)
    cpus.append(cpu_seconds() - c0)
med = statistics.median(times)
fastai_mbs = mb / med
fastai_cpu = mb / statistics.median(cpus)
print(f"fastai: {len(texts)} docs, {mb:.1f} MB, {sum(len(t) for t in toks)} tokens, {args.workers} processes: "
      f"median {med:.2f} s over {len(times)} runs = {fastai_mbs:.3f} MB/s; {fastai_cpu:.3f} MB per CPU-second")

if args.dump:
    def esc(x):
        return (x.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
                .replace("\r", "\\r").replace(" ", "\\s"))
    with gzip.open(args.dump, "wt", encoding="utf-8") as f:
        for i, t in enumerate(toks):
            f.write(f"imdb\t{i}\t{' '.join(esc(x) for x in t)}\n")
    print("wrote", args.dump)

if not args.no_ours:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.workers))
    if args.docs:
        env["BENCH_DOCS"] = str(args.docs)
    out = subprocess.run(["cargo", "bench", "-q", "-p", "ulmfit-text", "--bench", "tokenize"], cwd=root, env=env,
                         capture_output=True, text=True).stdout
    print(out.strip())
    m = re.search(r"= ([0-9.]+) MB/s.*; ([0-9.]+) MB per CPU-second", out)
    if m:
        print(f"ratio ours / fastai: wall-clock {float(m.group(1)) / fastai_mbs:.1f}x, "
              f"per CPU-second {float(m.group(2)) / fastai_cpu:.1f}x")
