//! The stage commands through the built binary, on a tiny TREC-6 pipeline: `pretrain`,
//! `finetune-lm`, `train-classifier`, then `eval --json` must report the test error
//! `train-classifier` printed; `run --resume` where nothing was saved must fail with a
//! message naming the missing state. SIGTERM stops a run with its state saved, like Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_dir() -> PathBuf {
    std::env::var_os("ULMFIT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")))
}

/// The data directory and a fresh scratch directory `ulmfit-cli-{name}-PID`, or None after a
/// skip line when the data directory lacks `needs`.
fn setup(name: &str, needs: &str) -> Option<(PathBuf, PathBuf)> {
    let data = data_dir();
    if !data.join(needs).exists() {
        println!("skip: no {needs} under {} (set ULMFIT_DATA)", data.display());
        return None;
    }
    let dir = std::env::temp_dir().join(format!("ulmfit-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    Some((data, dir))
}

fn ulmfit(args: &[&str], config: &Path, out: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ulmfit"))
        .args(args)
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running ulmfit");
    println!("ulmfit {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// The first JSON object in a command's standard output.
fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').expect("no JSON in the output");
    serde_json::Deserializer::from_str(&text[start..]).into_iter().next().unwrap().unwrap()
}

#[test]
fn stage_commands_chain_and_eval() {
    let Some((data, dir)) = setup("stages", "trec/train_5500.label") else { return };
    let config = dir.join("tiny.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[data]
root = "{}"
lm_train = "trec/TREC_10.label"
lm_valid = "trec/TREC_10.label"
task = "trec"
task_path = "trec"

[model]
emb_sz = 16
n_hid = 32
n_layers = 2
max_vocab = 600
min_freq = 2

[pretrain]
epochs = 1
bs = 16
bptt = 20

[finetune_lm]
frozen_epochs = 0
epochs = 1
bs = 32
bptt = 35

[classifier]
bs = 64

[[classifier.stages]]
freeze_to = 0
epochs = 1
lr = 1e-2
"#,
            data.display()
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let r = ulmfit(&["run", "--resume"], &config, &out);
    assert!(!r.status.success(), "run --resume with no state succeeded");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no training state"), "{err}");
    for cmd in ["pretrain", "finetune-lm"] {
        assert!(ulmfit(&[cmd, "--seed", "3"], &config, &out).status.success(), "{cmd} failed");
    }
    let trained = ulmfit(&["train-classifier", "--seed", "3"], &config, &out);
    assert!(trained.status.success(), "train-classifier failed");
    let eval = ulmfit(&["eval", "--seed", "3", "--json"], &config, &out);
    assert!(eval.status.success(), "eval failed");
    let (want, got) = (json(&trained)["test_error"].as_f64(), json(&eval)["test_error"].as_f64());
    assert!(want.is_some() && want == got, "train-classifier reported {want:?}, eval {got:?}");
    for f in ["pretrain/model.safetensors", "finetune/vocab.txt", "classifier/classes.txt", "metrics.jsonl"] {
        assert!(out.join(f).exists(), "the commands did not write {f}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM (what `timeout`, `kill` and job schedulers send) stops a run like Ctrl-C: it saves
/// the training state at the next step and exits with 130; `--resume` then finishes the stage.
#[test]
fn sigterm_saves_the_state_and_resume_finishes() {
    use std::io::{BufRead, BufReader};
    let Some((data, dir)) = setup("sigterm", "trec/TREC_10.label") else { return };
    let config = dir.join("long.toml");
    let text = format!(
        "[data]\nroot = \"{}\"\nlm_train = \"trec/TREC_10.label\"\nlm_valid = \"trec/TREC_10.label\"\n\n\
         [model]\nemb_sz = 16\nn_hid = 32\nn_layers = 2\nmax_vocab = 600\nmin_freq = 2\n\n\
         [pretrain]\nepochs = 40\nbs = 16\nbptt = 20\n",
        data.display()
    );
    std::fs::write(&config, text).unwrap();
    let out = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ulmfit"))
        .args(["pretrain"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running ulmfit");
    // Signal once the first epoch is reported: the handler is installed and training runs.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("epoch 1/40:") {
            break;
        }
    }
    assert!(seen.contains("epoch 1/40:"), "no first epoch before the end of output:\n{seen}");
    // The shell's builtin kill: no procps needed.
    let kill = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status().unwrap();
    assert!(kill.success(), "kill -TERM failed");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let rest = rest.join("\n");
    println!("after SIGTERM: {status}\n{rest}");
    assert_eq!(status.code(), Some(130), "a run stopped by SIGTERM exits with 130:\n{rest}");
    assert!(rest.contains("saved") && out.join("state/train_state.json").exists(), "no state saved:\n{rest}");
    let resumed = ulmfit(&["pretrain", "--resume"], &config, &out);
    assert!(resumed.status.success(), "pretrain --resume failed");
    assert!(out.join("pretrain/model.safetensors").exists(), "the resumed stage wrote no model");
    std::fs::remove_dir_all(&dir).ok();
}

/// `predict` says what is wrong: no texts on stdin, or a language model where a classifier
/// belongs (the fixtures need no data).
#[test]
fn predict_refuses_empty_input_and_language_models() {
    use std::process::Stdio;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let predict = |model: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_ulmfit"))
            .arg("predict")
            .arg("--model")
            .arg(model)
            .stdin(Stdio::null())
            .output()
            .expect("running ulmfit");
        assert!(!out.status.success(), "predict on {} succeeded", model.display());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = predict(&fixtures.join("roundtrip/classifier"));
    assert!(e.contains("no texts to classify in standard input"), "{e}");
    let e = predict(&fixtures.join("parity/lm_export"));
    assert!(e.contains("is not a classifier checkpoint") && e.contains("classes.txt"), "{e}");
}

/// The stage commands that read only the task do not fetch the pretraining corpus: `eval`
/// with only TREC-6 in the data directory fails on its missing model, not on WikiText-2.
#[test]
fn task_only_commands_do_not_fetch_the_pretraining_corpus() {
    let Some((data, dir)) = setup("task-only", "trec/train_5500.label") else { return };
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::os::unix::fs::symlink(data.join("trec"), dir.join("data/trec")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ulmfit"))
        .args(["eval", "configs/trec-cpu.toml", "--model"])
        .arg(dir.join("no-model"))
        .arg("--out")
        .arg(dir.join("run"))
        .env("ULMFIT_DATA", dir.join("data"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running ulmfit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("wikitext-2"), "{err}");
    assert!(err.contains("no checkpoint at"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
