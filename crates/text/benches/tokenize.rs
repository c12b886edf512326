//! Tokenizer throughput on IMDb (all 50,000 labelled reviews, read from the .tar.gz).
//!
//! `cargo bench -p ulmfit-text --bench tokenize` prints MB/s (text bytes / wall time, median of
//! repeats) for our tokenizer on the rayon pool (RAYON_NUM_THREADS, default all cores).
//! `scripts/bench_tokenize_fastai.py` times fastai on the same text; run both under
//! `flock /tmp/bench.lock`.

use std::path::PathBuf;
use std::time::Instant;

use ulmfit_text::datasets::load_imdb;
use ulmfit_text::Tokenizer;

/// CPU seconds (user + system) used by this process so far, from /proc/self/stat (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    if f.len() < 13 {
        return f64::NAN;
    }
    (f[11] + f[12]) / 100.0
}

fn main() {
    let data = std::env::var_os("ULMFIT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = data.join("imdb/aclImdb_labeled.tar.gz");
    if !path.exists() {
        println!("SKIP tokenize bench: {} not found", path.display());
        return;
    }
    let limit: usize = std::env::var("BENCH_DOCS").ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    let repeats: usize = std::env::var("BENCH_REPEATS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let imdb = load_imdb(&path).expect("load IMDb");
    let texts: Vec<String> = imdb.train.into_iter().chain(imdb.test).map(|d| d.text).take(limit).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let tok = Tokenizer::new();
    let mut times = Vec::new();
    let mut n_tokens = 0;
    let cpu0 = cpu_seconds();
    for _ in 0..repeats {
        let t0 = Instant::now();
        let out = tok.tokenize_batch(&texts);
        times.push(t0.elapsed().as_secs_f64());
        n_tokens = out.iter().map(Vec::len).sum();
    }
    let cpu = (cpu_seconds() - cpu0) / repeats as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    let med = times[times.len() / 2];
    println!(
        "ours: {} docs, {:.1} MB, {} tokens, {} threads: median {:.3} s over {} runs = {:.2} MB/s (min {:.3} s); {:.2} MB per CPU-second",
        texts.len(),
        bytes as f64 / 1e6,
        n_tokens,
        rayon::current_num_threads(),
        med,
        repeats,
        bytes as f64 / 1e6 / med,
        times[0],
        bytes as f64 / 1e6 / cpu
    );
}
