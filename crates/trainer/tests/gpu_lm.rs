//! An LM stage on the GPU (`gpu_lm::fit_lm_gpu`) against the same stage on the CPU
//! (`stages::fit_lm`): same model, data, schedule and discriminative LRs, dropout off (the
//! device draws its own masks), every batch full (the GPU skips a short last one). After a
//! frozen stage and an unfrozen one the weights, Adam moments and validation losses must
//! agree. Without a GPU the test prints a skip line and passes; ULMFIT_REQUIRE_GPU=1 makes
//! that a failure.

use ulmfit_cuda::Gpu;
use ulmfit_tensor::optim::Adam;
use ulmfit_tensor::Rng;
use ulmfit_text::{Bptt, Corpus, LmStream};
use ulmfit_trainer::awd_lstm::{AwdLstmConfig, LanguageModel};
use ulmfit_trainer::config::Dropouts;
use ulmfit_trainer::gpu_lm::fit_lm_gpu;
use ulmfit_trainer::metrics::MetricsLog;
use ulmfit_trainer::schedule::{discriminative_lrs, Schedule};
use ulmfit_trainer::stages::{adam, fit_lm, StagePlan};
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
fn train(gpu: Option<&Gpu>, train: &Corpus, valid: &Corpus) -> (LanguageModel, Adam, Vec<f32>) {
    let drop = Dropouts { input_p: 0.0, hidden_p: 0.0, weight_p: 0.0, embed_p: 0.0, output_p: 0.0 };
    let cfg = AwdLstmConfig { vocab: 40, emb_sz: 8, n_hid: 12, n_layers: 3, drop };
    let mut model = LanguageModel::new(cfg, &mut Rng::new(3));
    let mut opt = adam(model.param_groups(), 0.99, 1e-5);
    let dir = std::env::temp_dir().join(format!("ulmfit-gpu-lm-{}-{}", std::process::id(), gpu.is_some()));
    let mut log = MetricsLog::in_dir(&dir).expect("metrics log");
    let mut losses = Vec::new();
    for plan in plans(opt.groups.len()) {
        let (loss, _) = match gpu {
            Some(g) => fit_lm_gpu(g, &mut model, &mut opt, &plan, train, valid, BS, BPTT, 7, &mut log),
            None => fit_lm(&mut model, &mut opt, &plan, train, valid, BS, BPTT, 7, &mut log),
        }
        .expect("stage");
        losses.push(loss);
    }
    std::fs::remove_dir_all(&dir).ok();
    (model, opt, losses)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn gpu_lm_stages_match_cpu_stages() {
    let gpu = match Gpu::new(false) {
        Ok(g) => g,
        Err(e) if std::env::var("ULMFIT_REQUIRE_GPU").is_ok() => panic!("ULMFIT_REQUIRE_GPU is set: {e}"),
        Err(e) => {
            println!("skip gpu_lm_stages_match_cpu_stages: {e}");
            return;
        }
    };
    let (tr, va) = (corpus(40, 1, 40), corpus(12, 5, 40));
    for (what, c) in [("train", &tr), ("valid", &va)] {
        let all: Vec<usize> =
            LmStream::new(c, BS, Bptt::Fixed(BPTT), false, 7, 0).unwrap().map(|b| b.seq_len).collect();
        assert!(all.iter().all(|&t| t == BPTT), "{what}: every batch must be full for this test: {all:?}");
    }
    let (cpu, cpu_opt, cpu_loss) = train(None, &tr, &va);
    let (dev, dev_opt, dev_loss) = train(Some(&gpu), &tr, &va);
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
