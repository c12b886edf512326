//! Training stages on the GPU (`stages::fit_lm` and `fit_classifier` on `Backend::Cuda`,
//! i.e. `gpu_lm` and `gpu_clas`) against the same stages on the CPU: same model, data,
//! schedule and discriminative LRs, dropout off (the device draws its own masks), every LM
//! batch full (the GPU skips a short last one). After a frozen stage and an unfrozen one the
//! weights, Adam moments and validation figures must agree. Without a GPU each test prints a
//! skip line and passes; ULMFIT_REQUIRE_GPU=1 makes that a failure.

use ulmfit_tensor::optim::Adam;
use ulmfit_tensor::Rng;
use ulmfit_text::{Bptt, Corpus, LmStream};
use ulmfit_trainer::awd_lstm::{AwdLstm, AwdLstmConfig, LanguageModel};
use ulmfit_trainer::backend::Backend;
use ulmfit_trainer::classifier::Classifier;
use ulmfit_trainer::config::Dropouts;
use ulmfit_trainer::metrics::MetricsLog;
use ulmfit_trainer::schedule::{discriminative_lrs, Schedule};
use ulmfit_trainer::stages::{adam, fit_classifier, fit_lm, Labelled, StagePlan};
use ulmfit_trainer::train::StepConfig;

const BS: usize = 4;
const BPTT: usize = 6;

fn corpus(docs: usize, salt: u32, vocab: u32) -> Corpus {
    let doc = |d: u32| (0..9 + d % 5).map(|k| (k * 7 + d * 13 + salt) % (vocab - 2) + 2).collect::<Vec<u32>>();
    Corpus::from_docs(&(0..docs as u32).map(doc).collect::<Vec<_>>())
}

fn plans(groups: usize) -> [StagePlan; 2] {
    let step = StepConfig { clip: Some(0.5), alpha: 2.0, beta: 1.0 };
    let schedule = Schedule::Slanted { cut_frac: 0.1, ratio: 32.0 };
    let plan = |name: &str, top: usize, peaks: Vec<f32>| StagePlan {
        name: name.into(),
        epochs: 2,
        peaks,
        trainable_from_top: top,
        schedule,
        wd: 0.01,
        step,
    };
    [plan("frozen", 1, vec![1e-2; groups]), plan("unfrozen", usize::MAX, discriminative_lrs(3e-3, groups, 2.6))]
}

/// Both stages; returns the model, the optimizer and the validation losses.
fn train(backend: &Backend, train: &Corpus, valid: &Corpus) -> (LanguageModel, Adam, Vec<f32>) {
    let drop = Dropouts { input_p: 0.0, hidden_p: 0.0, weight_p: 0.0, embed_p: 0.0, output_p: 0.0 };
    let cfg = AwdLstmConfig { vocab: 40, emb_sz: 8, n_hid: 12, n_layers: 3, drop };
    let mut model = LanguageModel::new(cfg, &mut Rng::new(3));
    let mut opt = adam(model.param_groups(), &model.no_decay(), 0.99, 1e-5);
    let on_gpu = matches!(backend, Backend::Cuda(_));
    let dir = std::env::temp_dir().join(format!("ulmfit-gpu-lm-{}-{on_gpu}", std::process::id()));
    let mut log = MetricsLog::in_dir(&dir).expect("metrics log");
    let mut losses = Vec::new();
    for plan in plans(opt.groups.len()) {
        let (loss, _) =
            fit_lm(backend, &mut model, &mut opt, &plan, train, valid, BS, BPTT, 7, &mut log).expect("stage");
        losses.push(loss);
    }
    std::fs::remove_dir_all(&dir).ok();
    (model, opt, losses)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn gpu_or_skip(test: &str) -> Option<Backend> {
    ulmfit_cuda::device::gpu_or_skip(test, false).map(Backend::Cuda)
}

#[test]
fn gpu_lm_stages_match_cpu_stages() {
    // The CPU runs a short last batch, the GPU skips it: pick corpora with none.
    let full = |c: &Corpus| LmStream::new(c, BS, Bptt::Fixed(BPTT), false, 7, 0).unwrap().all(|b| b.seq_len == BPTT);
    let pick = |from: usize, salt: u32| (from..from + 40).map(|n| corpus(n, salt, 40)).find(full);
    let (tr, va) = (pick(40, 1).expect("a training corpus of full batches"), pick(12, 5).expect("a validation one"));
    let Some(gpu) = gpu_or_skip("gpu_lm_stages_match_cpu_stages") else { return };
    let (cpu, cpu_opt, cpu_loss) = train(&Backend::Cpu, &tr, &va);
    let (dev, dev_opt, dev_loss) = train(&gpu, &tr, &va);
    println!("validation loss, frozen then unfrozen: cpu {cpu_loss:?} gpu {dev_loss:?}");
    assert!(max_diff(&cpu_loss, &dev_loss) < 1e-4, "validation losses differ");
    for ((name, a), (_, b)) in cpu.named_params().iter().zip(dev.named_params()) {
        let d = max_diff(&a.to_vec(), &b.to_vec());
        println!("{name}: max |cpu - gpu| = {d:.2e}");
        assert!(d < 1e-4, "{name}: weights differ by {d}");
    }
    for (g, (a, b)) in cpu_opt.moments().iter().zip(dev_opt.moments()).enumerate() {
        for (k, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(a.steps, b.steps, "group {g} param {k}: Adam update counts");
            let (dm, dv) = (max_diff(&a.m, &b.m), max_diff(&a.v, &b.v));
            assert!(dm < 1e-4 && dv < 1e-6, "group {g} param {k}: moments differ by {dm}, {dv}");
        }
    }
}

/// A small classifier, dropout off; embedding x10 and LSTM weights x3 so that batch norm
/// does not amplify rounding (see tests/clas_cuda_vs_cpu.rs).
fn classifier() -> Classifier {
    let drop = Dropouts { input_p: 0.0, hidden_p: 0.0, weight_p: 0.0, embed_p: 0.0, output_p: 0.0 };
    let cfg = AwdLstmConfig { vocab: 40, emb_sz: 8, n_hid: 12, n_layers: 2, drop };
    let mut rng = Rng::new(5);
    let mut m = Classifier::new(AwdLstm::new(cfg, &mut rng), 3, 50, 0.1, &mut rng);
    (m.bptt, m.max_len) = (5, 10);
    m.encoder.embedding.data_mut().iter_mut().for_each(|v| *v *= 10.0);
    for t in m.encoder.layers.iter().flat_map(|l| [&l.w_ih, &l.w_hh]) {
        t.data_mut().iter_mut().for_each(|v| *v *= 3.0);
    }
    m.head.iter_mut().for_each(|b| b.p = 0.0);
    m
}

/// Both classifier stages on `backend`; returns the model, optimizer and validation accuracies.
fn train_classifier(backend: &Backend, train: &Labelled, valid: &Labelled) -> (Classifier, Adam, Vec<f32>) {
    let mut model = classifier();
    let mut opt = adam(model.param_groups(), &model.no_decay(), 0.99, 1e-5);
    let on_gpu = matches!(backend, Backend::Cuda(_));
    let dir = std::env::temp_dir().join(format!("ulmfit-gpu-clas-{}-{on_gpu}", std::process::id()));
    let mut log = MetricsLog::in_dir(&dir).expect("metrics log");
    let mut accs = Vec::new();
    for plan in plans(opt.groups.len()) {
        accs.push(fit_classifier(backend, &mut model, &mut opt, &plan, train, valid, 6, 3, &mut log).expect("stage"));
    }
    std::fs::remove_dir_all(&dir).ok();
    (model, opt, accs)
}

#[test]
fn gpu_classifier_stages_match_cpu_stages() {
    let Some(gpu) = gpu_or_skip("gpu_classifier_stages_match_cpu_stages") else { return };
    // Documents of 3..=26 tokens, labelled by their first token.
    let docs = |n: u32, salt: u32| -> (Corpus, Vec<u32>) {
        let doc = |d: u32| (0..3 + (d * 7 + salt) % 24).map(|k| (k * 5 + d * 11 + salt) % 38 + 2).collect::<Vec<u32>>();
        let all: Vec<Vec<u32>> = (0..n).map(doc).collect();
        let labels = all.iter().map(|d| d[0] % 3).collect();
        (Corpus::from_docs(&all), labels)
    };
    let ((tr, tl), (va, vl)) = (docs(30, 1), docs(12, 4));
    let (train, valid) = (Labelled { corpus: &tr, labels: &tl }, Labelled { corpus: &va, labels: &vl });
    let (cpu, cpu_opt, cpu_acc) = train_classifier(&Backend::Cpu, &train, &valid);
    let (dev, dev_opt, dev_acc) = train_classifier(&gpu, &train, &valid);
    println!("validation accuracy, frozen then unfrozen: cpu {cpu_acc:?} gpu {dev_acc:?}");
    assert_eq!(cpu_acc, dev_acc, "validation accuracies differ");
    for ((name, a), (_, b)) in cpu.named_tensors().iter().zip(dev.named_tensors()) {
        let d = max_diff(&a.to_vec(), &b.to_vec());
        println!("{name}: max |cpu - gpu| = {d:.2e}");
        assert!(d < 1e-3, "{name}: weights or statistics differ by {d}");
    }
    for (g, (a, b)) in cpu_opt.moments().iter().zip(dev_opt.moments()).enumerate() {
        for (k, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(a.steps, b.steps, "group {g} param {k}: Adam update counts");
            assert!(max_diff(&a.m, &b.m) < 1e-3, "group {g} param {k}: first moments differ");
        }
    }
}
