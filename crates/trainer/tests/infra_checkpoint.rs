//! Checkpoints: round trip, atomic replacement and fallback, refusal of other shapes and
//! vocabularies, and clear errors (never panics) for truncated, corrupted or missing files.

use std::fs;
use std::path::{Path, PathBuf};

use ulmfit_tensor::Tensor;
use ulmfit_trainer::checkpoint::*;

/// A fresh scratch directory in the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ulmfit-infra-ckpt-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn model() -> (Tensor, Tensor) {
    let w = Tensor::param((0..6).map(|i| i as f32 * 0.5 - 1.0).collect(), &[2, 3]).unwrap();
    let b = Tensor::param(vec![f32::MIN_POSITIVE, -0.0, 7.25], &[3]).unwrap();
    (w, b)
}

fn vocab() -> Vec<String> {
    let odd = ["\n", "back\\slash", "", " sp ", "é", "\t"];
    ulmfit_text::SPECIAL_TOKENS.iter().chain(&odd).map(|s| s.to_string()).collect()
}

fn state() -> TrainState {
    let mut meta = TrainMeta {
        stage: 2,
        epoch: 1,
        step: 1234,
        seed: 42,
        rng_state: vec![u64::MAX, 1, 2, 3],
        ..Default::default()
    };
    meta.counters.insert("adam.steps.0".into(), 99);
    TrainState {
        tensors: vec![NamedTensor { name: "adam.m.0".into(), shape: vec![3], data: vec![0.1, 0.2, 0.3] }],
        meta,
    }
}

fn save_default(dir: &Path) {
    let (w, b) = model();
    save(dir, &[("enc.weight", &w), ("dec.bias", &b)], &vocab(), "[model]\nemb_sz = 3\n", Some(&state())).unwrap();
}

fn err_text(r: Result<Checkpoint, CheckpointError>) -> String {
    match r {
        Ok(_) => panic!("loading a damaged checkpoint succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trip_and_assign() {
    let tmp = Scratch::new("round");
    let dir = tmp.0.join("ckpt");
    save_default(&dir);
    let ck = load(&dir).unwrap();
    assert_eq!(ck.path, dir);
    assert_eq!(ck.vocab, vocab());
    assert_eq!(ck.config, "[model]\nemb_sz = 3\n");
    assert_eq!(ck.state, Some(state()));
    let names: Vec<_> = ck.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["dec.bias", "enc.weight"]);
    let (w0, b0) = model();
    let (w, b) = (Tensor::zeros(&[2, 3]), Tensor::zeros(&[3]));
    ck.assign_to(&[("enc.weight", &w), ("dec.bias", &b)]).unwrap();
    assert_eq!(w.to_vec(), w0.to_vec());
    // Bit-exact, including -0.0 and denormal-adjacent values.
    let bits = |t: &Tensor| t.to_vec().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&b), bits(&b0));
    // vocab.txt is the text crate's format: `Vocab::load` reads it back.
    let specials = ulmfit_text::SPECIAL_TOKENS.iter().map(|s| s.to_string());
    let itos: Vec<String> = specials.chain(["a\tb".into(), "\n".into(), "\\n".into()]).collect();
    save(&dir, &[("enc.weight", &w)], &itos, "", None).unwrap();
    assert_eq!(ulmfit_text::Vocab::load(&dir.join("vocab.txt")).unwrap().itos(), itos.as_slice());
    assert_eq!(load(&dir).unwrap().vocab, itos);
    // Saving without state gives no state.
    save(&dir, &[("enc.weight", &w)], &[], "", None).unwrap();
    let ck = load(&dir).unwrap();
    assert!(ck.state.is_none() && ck.vocab.is_empty() && ck.tensors.len() == 1);
}

#[test]
fn mismatched_model_is_refused_with_every_difference() {
    let tmp = Scratch::new("mismatch");
    let dir = tmp.0.join("ckpt");
    save_default(&dir);
    let ck = load(&dir).unwrap();
    let (w, extra) = (Tensor::zeros(&[3, 2]), Tensor::zeros(&[1]));
    let e = ck.assign_to(&[("enc.weight", &w), ("head.weight", &extra)]).unwrap_err().to_string();
    for needle in [
        "enc.weight: model expects [3, 2], checkpoint has [2, 3]",
        "missing in checkpoint: head.weight",
        "unexpected in checkpoint: dec.bias",
        "ckpt",
    ] {
        assert!(e.contains(needle), "error lacks {needle:?}:\n{e}");
    }
    assert!(w.to_vec().iter().all(|&x| x == 0.0), "a refused assign changed the model");
}

#[test]
fn vocab_differences_are_described() {
    let v = vocab();
    check_vocab(&v, &v).unwrap();
    let k = ulmfit_text::SPECIAL_TOKENS.len() + 1; // the backslash token
    let mut other = v.clone();
    other[k] = "other".into();
    let e = check_vocab(&v, &other).unwrap_err().to_string();
    assert!(e.contains(&format!("index {k}")) && e.contains("back\\\\slash") && e.contains("\"other\""), "{e}");
    let e = check_vocab(&v, &v[..k]).unwrap_err().to_string();
    let want = format!("expected {} tokens, checkpoint has {k}", v.len());
    assert!(e.contains(&want) && e.contains(&format!("first {k} tokens agree")), "{e}");
}

#[test]
fn interrupted_save_falls_back_to_old() {
    let tmp = Scratch::new("fallback");
    let dir = tmp.0.join("ckpt");
    save_default(&dir);
    // Simulate a crash between "rename DIR to DIR.old" and "rename tmp to DIR".
    let old = PathBuf::from(format!("{}.old", dir.display()));
    fs::rename(&dir, &old).unwrap();
    let ck = load(&dir).unwrap();
    assert_eq!(ck.path, old);
    // A trailing slash names the same checkpoint: .old beside it, not inside.
    let slash = PathBuf::from(format!("{}/", dir.display()));
    assert_eq!(load(&slash).unwrap().path, old);
    // The next save replaces it and cleans up.
    save_default(&dir);
    assert!(dir.is_dir() && !old.exists());
    // Overwriting an existing checkpoint leaves no temporary or .old directories.
    save_default(&dir);
    let left: Vec<_> = fs::read_dir(dir.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("ckpt")]);
    let e = err_text(load(&dir.with_file_name("nothing")));
    assert!(e.contains("no checkpoint at") && e.contains("nothing"), "{e}");
}

#[test]
fn damaged_files_give_errors_naming_the_file() {
    let tmp = Scratch::new("damage");
    let root = tmp.0.clone();
    let fresh = |tag: &str| {
        let d = root.join(tag);
        save_default(&d);
        d
    };
    // Truncated weights.
    let d = fresh("trunc");
    let f = d.join("model.safetensors");
    let bytes = fs::read(&f).unwrap();
    for cut in [0, 5, 8, 20, bytes.len() - 1] {
        fs::write(&f, &bytes[..cut]).unwrap();
        let e = err_text(load(&d));
        assert!(e.contains("model.safetensors") && e.contains("corrupt"), "cut at {cut}: {e}");
    }
    // A flipped byte in the data section is caught by the checksum; in the header, by the parser.
    for (tag, pos) in [("flip-data", bytes.len() - 3), ("flip-header", 12)] {
        let d = fresh(tag);
        let f = d.join("model.safetensors");
        let mut b = fs::read(&f).unwrap();
        b[pos] ^= 0x5a;
        fs::write(&f, &b).unwrap();
        let e = err_text(load(&d));
        assert!(e.contains("model.safetensors"), "{tag}: {e}");
    }
    // Every file deleted in turn.
    for file in ["model.safetensors", "vocab.txt", "config.toml", "train_state.safetensors", "train_state.json"] {
        let d = fresh(&format!("rm-{file}"));
        fs::remove_file(d.join(file)).unwrap();
        let e = err_text(load(&d));
        assert!(e.contains(file), "deleting {file}: {e}");
    }
    // Truncated vocabulary, bad UTF-8, no special tokens first, broken JSON, flipped optimizer state.
    let d = fresh("vocab");
    let v = fs::read(d.join("vocab.txt")).unwrap();
    fs::write(d.join("vocab.txt"), &v[..v.len() - 1]).unwrap();
    assert!(err_text(load(&d)).contains("vocab.txt"));
    fs::write(d.join("vocab.txt"), [0x66, 0xff, 0x0a]).unwrap();
    let e = err_text(load(&d));
    assert!(e.contains("vocab.txt") && e.contains("UTF-8"), "{e}");
    fs::write(d.join("vocab.txt"), "the\nxxunk\n").unwrap();
    let e = err_text(load(&d));
    assert!(e.contains("vocab.txt") && e.contains("xxunk and xxpad"), "{e}");
    let d = fresh("json");
    fs::write(d.join("train_state.json"), "{\"stage\": 1,").unwrap();
    assert!(err_text(load(&d)).contains("train_state.json"));
    let d = fresh("state");
    let f = d.join("train_state.safetensors");
    let mut b = fs::read(&f).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&f, &b).unwrap();
    let e = err_text(load(&d));
    assert!(e.contains("train_state.safetensors") && e.contains("checksum"), "{e}");
}

#[test]
fn duplicate_names_are_refused() {
    let tmp = Scratch::new("dup");
    let dir = tmp.0.join("ckpt");
    let (w, _) = model();
    let e = save(&dir, &[("a", &w), ("a", &w)], &[], "", None).unwrap_err().to_string();
    assert!(e.contains("\"a\" given twice"), "{e}");
}
