//! The LR range test on a tiny AWD-LSTM over PTB's validation text, 30 steps: it must draw
//! its plot, record exponentially increasing LRs from 1e-7, and suggest an LR in range.

mod common;

use common::data_dir;
use std::path::PathBuf;

use ulmfit_trainer::config::Config;
use ulmfit_trainer::lr_find::lr_find;

#[test]
fn lr_find_on_tiny_ptb_model() {
    let data = data_dir();
    if !data.join("ptb/ptb.valid.txt").exists() {
        println!("skip: no ptb under {} (set ULMFIT_DATA)", data.display());
        return;
    }
    let config = format!(
        r#"
[data]
root = "{root}"
lm_train = "ptb/ptb.valid.txt"
lm_valid = "ptb/ptb.test.txt"

[model]
emb_sz = 32
n_hid = 64
n_layers = 2
max_vocab = 8000
min_freq = 2

[pretrain]
bs = 32
bptt = 35
"#,
        root = data.display()
    );
    let cfg = Config::parse(&config, &PathBuf::from("test.toml")).unwrap();
    let plot = std::env::temp_dir().join(format!("ulmfit-lr-find-test-{}.svg", std::process::id()));
    let finder = lr_find(&cfg, 30, &plot).unwrap();
    let svg = std::fs::read_to_string(&plot).unwrap();
    std::fs::remove_file(&plot).ok();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "the plot has no curve: {svg:.80}");
    let lrs: Vec<f64> = finder.history.iter().map(|h| h.0).collect();
    println!(
        "lr_find: {} steps, LRs {:e}..{:e}, suggestion {:?}",
        lrs.len(),
        lrs[0],
        lrs[lrs.len() - 1],
        finder.suggest()
    );
    assert!(lrs.len() >= 10, "the finder stopped after {} steps", lrs.len());
    assert!((lrs[0] - 1e-7).abs() < 1e-12, "first LR {} is not 1e-7", lrs[0]);
    if let Some(i) = lrs.windows(2).position(|w| w[1] <= w[0]) {
        panic!("LRs do not increase at step {i}: {} then {}", lrs[i], lrs[i + 1]);
    }
    let lr = finder.suggest().expect("no suggested LR");
    assert!((1e-7..=10.0).contains(&lr), "suggested LR {lr} is outside [1e-7, 10]");
}
