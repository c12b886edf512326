//! Compares our tokens with fastai's on all IMDb reviews, from a dump written by
//! `scripts/bench_tokenize_fastai.py --dump PATH` (same format as tests/fixtures).
//!
//! `cargo run --release -p ulmfit-text --example compare_fastai_tokens PATH [aclImdb.tar.gz]`

use std::io::Read;
use std::path::PathBuf;

use ulmfit_text::datasets::load_imdb;
use ulmfit_text::vocab::unescape;
use ulmfit_text::Tokenizer;

fn main() {
    let mut args = std::env::args().skip(1);
    let dump = args.next().expect("usage: compare_fastai_tokens DUMP.gz [aclImdb.tar.gz]");
    let tar = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/imdb/aclImdb_labeled.tar.gz")
    });
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&dump).expect("open dump"))
        .read_to_string(&mut text)
        .expect("read dump");
    let want: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.splitn(3, '\t').nth(2).unwrap_or("").split(' ').map(|t| unescape(&t.replace("\\s", " "))).collect())
        .collect();
    let imdb = load_imdb(&tar).expect("load IMDb");
    let texts: Vec<String> = imdb.train.into_iter().chain(imdb.test).map(|d| d.text).take(want.len()).collect();
    let got = Tokenizer::new().tokenize_batch(&texts);
    let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    println!(
        "{} of {} documents identical ({:.3}%)",
        want.len() - bad.len(),
        want.len(),
        100.0 * (want.len() - bad.len()) as f64 / want.len() as f64
    );
    for &i in bad.iter().take(15) {
        let (g, w) = (&got[i], &want[i]);
        let k = (0..g.len().max(w.len())).find(|&k| g.get(k) != w.get(k)).unwrap_or(0);
        let lo = k.saturating_sub(3);
        println!(
            "  doc {i} token {k}: ours {:?} fastai {:?}",
            &g[lo..(k + 4).min(g.len())],
            &w[lo..(k + 4).min(w.len())]
        );
    }
}
