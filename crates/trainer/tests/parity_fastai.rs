//! Numerical parity with fastai, on the CPU and (two tests) through the CUDA path: the fixtures in `tests/fixtures/parity/` hold a small
//! AWD-LSTM language model and classifier built by fastai's own modules, their weights, inputs,
//! outputs, loss and every parameter gradient (made by `scripts/make_parity_fixtures.py`), with
//! dropout off and with dropout on, fastai being handed the masks our code draws. We load the
//! same weights into our models, run the same inputs and compare: outputs and losses within
//! 1e-5 and gradients within 1e-4, relative to the largest reference value of each tensor
//! (`max|ours - fastai| / max|fastai|`). Every figure is printed. The references are fastai's
//! modules run in float64; fastai's own float32 run is within a fifth of these tolerances.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use ulmfit_cuda::clas::ClasCuda;
use ulmfit_cuda::device::gpu_or_skip;
use ulmfit_cuda::lm::{self, Hyper, LmConfig, LmCuda};
use ulmfit_lstm::op::lstm;
use ulmfit_tensor::{no_grad, Rng, Tensor};
use ulmfit_trainer::awd_lstm::{lm_loss, AwdLstm, AwdLstmConfig, LanguageModel};
use ulmfit_trainer::checkpoint;
use ulmfit_trainer::classifier::{Classifier, DocBatch};
use ulmfit_trainer::config::{Config, Dropouts};
use ulmfit_trainer::gpu_clas::{clas_config, clas_weights};
use ulmfit_trainer::gpu_lm::lm_weights;
use ulmfit_trainer::stages::adam;

/// Outputs and losses: relative tolerance.
const OUT_TOL: f32 = 1e-5;
/// Parameter gradients: relative tolerance.
const GRAD_TOL: f32 = 1e-4;

/// `tests/fixtures` of the checkout, or `$ULMFIT_FIXTURES` (a test binary run elsewhere, as on
/// the GPU machine, where the build's path does not exist).
fn fixtures_dir() -> PathBuf {
    std::env::var_os("ULMFIT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures"))
}

/// One fixture file: float tensors, integer tensors (ids, labels) and string metadata.
struct Fixture {
    name: String,
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, Vec<i32>>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = fixtures_dir().join("parity").join(name);
        let buf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&buf).expect("fixture header");
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&buf).expect("fixture safetensors");
        let (mut floats, mut ints) = (HashMap::new(), HashMap::new());
        for (n, v) in st.tensors() {
            let words = v.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
            match v.dtype() {
                Dtype::F32 => _ = floats.insert(n, (v.shape().to_vec(), words.map(f32::from_le_bytes).collect())),
                Dtype::I32 => _ = ints.insert(n, words.map(i32::from_le_bytes).collect()),
                d => panic!("{name}: tensor {n} has dtype {d:?}"),
            }
        }
        Fixture { name: name.to_string(), floats, ints, meta }
    }

    fn f32s(&self, key: &str) -> &[f32] {
        &self.floats.get(key).unwrap_or_else(|| panic!("{}: no tensor {key}", self.name)).1
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        let v = self.ints.get(key).unwrap_or_else(|| panic!("{}: no tensor {key}", self.name));
        v.iter().map(|&i| u32::try_from(i).expect("non-negative id")).collect()
    }

    fn usize(&self, key: &str) -> usize {
        self.meta.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{}: no meta {key}", self.name))
    }

    fn f32_meta(&self, key: &str) -> f32 {
        self.meta.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{}: no meta {key}", self.name))
    }

    /// Copies `param.NAME` into each named tensor (shapes must agree; every param is used).
    fn assign(&self, named: &[(String, Tensor)]) {
        for (n, t) in named {
            let (shape, data) = self.floats.get(&format!("param.{n}")).unwrap_or_else(|| panic!("no param.{n}"));
            assert_eq!(shape.as_slice(), t.shape(), "param.{n}: fixture shape vs model shape");
            t.data_mut().copy_from_slice(data);
        }
        let stored = self.floats.keys().filter(|k| k.starts_with("param.")).count();
        assert_eq!(stored, named.len(), "{}: the fixture has params the model lacks", self.name);
    }
}

/// `max|got - want| / max|want|` and the index of the largest difference.
fn rel_err(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let (i, d) =
        got.iter().zip(want).map(|(a, b)| (a - b).abs()).enumerate().fold(
            (0, 0.0),
            |m, x| {
                if x.1 > m.1 {
                    x
                } else {
                    m
                }
            },
        );
    (d / scale, i)
}

/// Compares, prints the figure, fails above `tol`; returns the relative error.
fn check(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    let (e, i) = rel_err(got, want);
    println!("{what:<48} max rel err {e:.2e} (tol {tol:.0e})");
    assert!(
        e <= tol,
        "{what}: max relative error {e:.3e} > {tol:.0e} at index {i}: ours {} vs fastai {}",
        got[i],
        want[i]
    );
    e
}

/// Checks the gradient of every parameter in `named` against `{prefix}grad.NAME`; returns the worst.
fn check_grads(fx: &Fixture, named: &[(String, Tensor)], prefix: &str) -> f32 {
    let params: Vec<_> = named.iter().filter(|(n, _)| !n.contains("running_")).collect();
    let want = fx.floats.keys().filter(|k| k.starts_with(&format!("{prefix}grad."))).count();
    assert_eq!(want, params.len(), "{}: gradients stored vs parameters", fx.name);
    let mut worst = 0.0f32;
    for (n, t) in params {
        let got = t.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; t.numel()]);
        worst = worst.max(check(
            &format!("{} {prefix}grad {n}", fx.name),
            &got,
            fx.f32s(&format!("{prefix}grad.{n}")),
            GRAD_TOL,
        ));
    }
    worst
}

fn encoder_config(fx: &Fixture, drop: Dropouts) -> AwdLstmConfig {
    AwdLstmConfig {
        vocab: fx.usize("vocab"),
        emb_sz: fx.usize("emb_sz"),
        n_hid: fx.usize("n_hid"),
        n_layers: fx.usize("n_layers"),
        drop,
    }
}

/// The dropouts of the masked case (`masked.input_p`, ... in the metadata).
fn masked_dropouts(fx: &Fixture) -> Dropouts {
    let p = |k: &str| fx.f32_meta(&format!("masked.{k}"));
    Dropouts {
        input_p: p("input_p"),
        hidden_p: p("hidden_p"),
        weight_p: p("weight_p"),
        embed_p: p("embed_p"),
        output_p: p("output_p"),
    }
}

/// One LM batch `{p}` (`ids`, `targets`) from the model's carried state, in train mode:
/// logits, raw outputs, loss with AR/TAR, the last layer's final h, every gradient.
fn lm_batch(fx: &Fixture, lm: &mut LanguageModel, p: &str, rng: &mut Rng) -> Vec<u32> {
    let named = lm.named_params();
    let ids = fx.ids(&format!("{p}ids"));
    let shape = &fx.floats[&format!("{p}raw")].0; // [T, B, E]
    let (t, b) = (shape[0], shape[1]);
    named.iter().for_each(|(_, w)| w.zero_grad());
    let out = lm.forward(&ids, t, b, true, rng).expect("forward");
    check(&format!("lm {p}logits"), &out.logits.to_vec(), fx.f32s(&format!("{p}logits")), OUT_TOL);
    check(&format!("lm {p}raw"), &out.raw.to_vec(), fx.f32s(&format!("{p}raw")), OUT_TOL);
    let (alpha, beta) = (fx.f32_meta("alpha"), fx.f32_meta("beta"));
    // The training path: decoder and cross-entropy fused, on the same output.
    let ce = lm.decoder_cross_entropy(&out.dropped, &fx.ids(&format!("{p}targets"))).expect("cross-entropy");
    let (loss, _) = lm_loss(ce, &out.raw, &out.dropped, alpha, beta).expect("loss");
    check(&format!("lm {p}loss (CE + AR + TAR)"), &[loss.item().unwrap()], fx.f32s(&format!("{p}loss")), OUT_TOL);
    let top = lm.encoder.layers.len() - 1;
    let last = out.raw.narrow(0, t - 1, 1).unwrap().to_vec();
    check(&format!("lm {p}raw[T-1] = h.{top}"), &last, fx.f32s(&format!("{p}h.{top}")), OUT_TOL);
    loss.backward().expect("backward");
    check_grads(fx, &named, p);
    ids
}

/// Every layer's final (h, c) after `ids` from `state`: our encoder keeps its state private,
/// so this runs the encoder's layer-op chain (the same calls, no dropout) and compares.
fn check_final_states(fx: &Fixture, lm: &LanguageModel, p: &str, ids: &[u32], state: &mut [Option<(Tensor, Tensor)>]) {
    let shape = &fx.floats[&format!("{p}raw")].0;
    let (t, b, e) = (shape[0], shape[1], shape[2]);
    let mut x = no_grad(|| lm.encoder.embedding.embedding(ids)).unwrap().reshape(&[t, b, e]).unwrap();
    for (l, w) in lm.encoder.layers.iter().enumerate() {
        let h = w.w_hh.dim(1);
        let (h0, c0) = state[l].clone().unwrap_or_else(|| (Tensor::zeros(&[b, h]), Tensor::zeros(&[b, h])));
        let step = no_grad(|| lstm(&x, &w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh, &h0, &c0, None)).unwrap();
        check(&format!("lm {p}h.{l}"), &step.h_n.to_vec(), fx.f32s(&format!("{p}h.{l}")), OUT_TOL);
        check(&format!("lm {p}c.{l}"), &step.c_n.to_vec(), fx.f32s(&format!("{p}c.{l}")), OUT_TOL);
        x = step.y;
        state[l] = Some((step.h_n, step.c_n));
    }
}

/// Dropout off, two consecutive batches (the second starts from the first's state): logits,
/// raw outputs, loss with AR/TAR, every layer's final (h, c), every gradient.
#[test]
fn language_model_matches_fastai() {
    let fx = Fixture::load("lm.safetensors");
    let mut rng = Rng::new(0);
    let mut lm = LanguageModel::new(encoder_config(&fx, Dropouts::lm().scaled(0.0)), &mut rng);
    fx.assign(&lm.named_params());
    let mut state = vec![None; lm.encoder.layers.len()];
    for p in ["b1.", "b2."] {
        let ids = lm_batch(&fx, &mut lm, p, &mut rng);
        check_final_states(&fx, &lm, p, &ids, &mut state);
    }
}

/// All five dropouts on, fastai run with the very masks our code draws from `Rng::new(mask_seed)`
/// (the fixture script replays our generator and injects them into fastai's modules).
#[test]
fn language_model_with_our_dropout_masks_matches_fastai() {
    let fx = Fixture::load("lm.safetensors");
    let mut lm = LanguageModel::new(encoder_config(&fx, masked_dropouts(&fx)), &mut Rng::new(0));
    fx.assign(&lm.named_params());
    lm_batch(&fx, &mut lm, "m1.", &mut Rng::new(fx.usize("mask_seed") as u64));
}

/// The export script's output for a language model saved as fastai's pretrained wt103 files
/// are (bare state dict with the extra `module.weight_hh_l0` copies, itos pickle) loads through
/// our checkpoint reader (checksum, names, shapes, config sizes) with exactly fastai's weights.
#[test]
fn exported_language_model_loads() {
    let fx = Fixture::load("lm.safetensors");
    let dir = fixtures_dir().join("parity/lm_export");
    let ck = checkpoint::load(&dir).expect("load the exported checkpoint");
    let cfg = Config::parse(&ck.config, &dir.join("config.toml")).expect("parse its config");
    let m = &cfg.model;
    assert_eq!((m.emb_sz, m.n_hid, m.n_layers), (fx.usize("emb_sz"), fx.usize("n_hid"), fx.usize("n_layers")));
    assert_eq!(ck.vocab.len(), fx.usize("vocab"), "vocabulary size");
    assert_eq!(&ck.vocab[..2], ["xxunk", "xxpad"], "special tokens at ids 0 and 1");
    assert!(ck.vocab.iter().any(|t| t == "tab\there"), "escaped tokens read back");
    let cfg = AwdLstmConfig {
        vocab: ck.vocab.len(),
        emb_sz: m.emb_sz,
        n_hid: m.n_hid,
        n_layers: m.n_layers,
        drop: m.lm_dropouts,
    };
    let lm = LanguageModel::new(cfg, &mut Rng::new(0));
    let named = lm.named_params();
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    ck.assign_to(&refs).expect("names and shapes fit our language model");
    for (n, t) in &named {
        assert_eq!(t.to_vec(), fx.f32s(&format!("param.{n}")), "{n}: exported values differ from fastai's");
    }
}

/// The fixture's classifier for case `{case}` (fastai's weights; dropouts off but in the
/// masked case) and the case's documents, longest first.
fn classifier_and_docs(fx: &Fixture, case: &str) -> (Classifier, Vec<Vec<u32>>) {
    let masked = case == "masked";
    let drop = if masked { masked_dropouts(fx) } else { Dropouts::clas().scaled(0.0) };
    let mut rng = Rng::new(0);
    let head_p = if masked { fx.f32_meta("masked.head_p") } else { 0.0 };
    let encoder = AwdLstm::new(encoder_config(fx, drop), &mut rng);
    let mut model = Classifier::new(encoder, fx.usize("classes"), fx.usize("lin_ftrs"), head_p, &mut rng);
    model.bptt = fx.usize("bptt");
    model.max_len = fx.usize("max_len");
    fx.assign(&model.named_tensors());
    let p = format!("{case}.");
    let docs =
        (0..).map(|i| format!("{p}doc.{i}")).take_while(|k| fx.ints.contains_key(k)).map(|k| fx.ids(&k)).collect();
    (model, docs)
}

/// Runs classifier case `{case}` (eval, train with dropouts 0, or masked: train with our
/// masks) and checks logits, loss, every gradient and, in train mode, the running statistics.
fn classifier_case(case: &str) {
    let fx = Fixture::load("clas.safetensors");
    let (mut model, docs) = classifier_and_docs(&fx, case);
    let named = model.named_tensors();
    let p = format!("{case}.");
    let lens: Vec<usize> = docs.iter().map(Vec::len).collect();
    println!("classifier {case}: documents of lengths {lens:?}, bptt {}, max_len {}", model.bptt, model.max_len);
    let train = case != "eval";
    let mut rng = Rng::new(fx.usize("mask_seed") as u64);
    let logits = model.forward(&DocBatch { docs }, train, &mut rng).expect("forward");
    check(&format!("classifier {p}logits"), &logits.to_vec(), fx.f32s(&format!("{p}logits")), OUT_TOL);
    let loss = logits.cross_entropy(&fx.ids(&format!("{p}labels")), None).expect("loss");
    check(&format!("classifier {p}loss"), &[loss.item().unwrap()], fx.f32s(&format!("{p}loss")), OUT_TOL);
    loss.backward().expect("backward");
    check_grads(&fx, &named, &p);
    if train {
        for (n, t) in named.iter().filter(|(n, _)| n.contains("running_")) {
            check(&format!("classifier {p}updated {n}"), &t.to_vec(), fx.f32s(&format!("{p}after.{n}")), OUT_TOL);
        }
    }
}

/// Eval mode: batch norm on the stored running statistics; documents of lengths 23, 17, 12, 4
/// with bptt 5 and max_len 10, front-padded by fastai, back-padded by us.
#[test]
fn classifier_eval_matches_fastai() {
    classifier_case("eval");
}

/// Train mode with every dropout 0: batch norm on batch statistics, running statistics updated.
#[test]
fn classifier_train_mode_matches_fastai() {
    classifier_case("train");
}

/// Train mode with every dropout on (encoder and head), fastai given our masks. The documents
/// fill the same number of chunks, so that fastai's chunks hold the same rows as ours.
#[test]
fn classifier_with_our_dropout_masks_matches_fastai() {
    classifier_case("masked");
}

/// Case `{case}` with fastai's classifier AR/TAR (`TextLearner`'s `RNNRegularizer` on the
/// encoder output, alpha and beta from the metadata): the penalty, the total loss, and every
/// gradient of the total (`{case}.reg.*`). The "train" documents leave zeros in fastai's
/// output (a document absent from the last chunk) and run trailing padding in AR/TAR.
fn classifier_reg_case(case: &str) {
    let fx = Fixture::load("clas.safetensors");
    let (mut model, docs) = classifier_and_docs(&fx, case);
    let named = model.named_tensors();
    let p = format!("{case}.reg.");
    let (alpha, beta) = (fx.f32_meta("alpha"), fx.f32_meta("beta"));
    let mut rng = Rng::new(fx.usize("mask_seed") as u64);
    let (logits, reg) = model.forward_regularized(&DocBatch { docs }, alpha, beta, &mut rng).expect("forward");
    check(&format!("classifier {p}ar_tar"), &[reg.item().unwrap()], fx.f32s(&format!("{p}ar_tar")), OUT_TOL);
    let ce = logits.cross_entropy(&fx.ids(&format!("{case}.labels")), None).expect("loss");
    let loss = ce.add(&reg).expect("total");
    check(&format!("classifier {p}loss"), &[loss.item().unwrap()], fx.f32s(&format!("{p}loss")), OUT_TOL);
    loss.backward().expect("backward");
    check_grads(&fx, &named, &p);
}

/// AR/TAR on the classifier, dropouts off.
#[test]
fn classifier_ar_tar_matches_fastai() {
    classifier_reg_case("train");
}

/// AR/TAR on the classifier with our dropout masks.
#[test]
fn classifier_ar_tar_with_our_dropout_masks_matches_fastai() {
    classifier_reg_case("masked");
}

/// Two Adam steps as fastai's `Learner` takes them (a learning rate per parameter group,
/// decoupled weight decay skipping what `wd_bn_bias=False` skips) from the fixture's weights and
/// gradients (`step.*`): each parameter's group and decay flag against fastai's `do_wd`, then
/// the weights (1e-5) and the updates (1e-3, relative to the largest) after each step.
fn adam_steps_match_fastai(fx: &Fixture, named: &[(String, Tensor)], groups: Vec<Vec<Tensor>>, no_decay: &[Tensor]) {
    let params: Vec<&(String, Tensor)> = named.iter().filter(|(n, _)| !n.contains("running_")).collect();
    let mut opt = adam(groups, no_decay, fx.f32_meta("step.sqr_mom"), fx.f32_meta("step.eps"));
    let lrs = fx.f32s("step.lrs");
    assert_eq!(opt.groups.len(), lrs.len(), "{}: parameter groups", fx.name);
    for (g, &lr) in opt.groups.iter_mut().zip(lrs) {
        (g.lr, g.weight_decay, g.betas.0) = (lr, fx.f32s("step.wd")[0], fx.f32_meta("step.mom"));
    }
    for (n, t) in &params {
        let (k, j) = (0..opt.groups.len())
            .find_map(|k| opt.groups[k].params.iter().position(|p| p.same(t)).map(|j| (k, j)))
            .unwrap_or_else(|| panic!("{n} is in no parameter group"));
        assert_eq!(k as i32, fx.ints[&format!("step.group.{n}")][0], "{}: {n}'s group", fx.name);
        let decays = fx.ints[&format!("step.do_wd.{n}")][0] == 1;
        assert_eq!(opt.groups[k].decays[j], decays, "{}: {n} decayed (fastai's do_wd)", fx.name);
    }
    for step in [1, 2] {
        let grad = fx.meta[&format!("step.grad{step}")].clone();
        let before: Vec<Vec<f32>> = params.iter().map(|(_, t)| t.to_vec()).collect();
        opt.zero_grad();
        // sum over parameters of <w, G>: its gradient is the fixture's G.
        let mut loss = Tensor::scalar(0.0);
        for (n, t) in &params {
            let g = Tensor::from_vec(fx.f32s(&format!("{grad}{n}")).to_vec(), t.shape()).unwrap();
            loss = loss.add(&t.mul(&g).unwrap().sum_all().unwrap()).unwrap();
        }
        loss.backward().unwrap();
        opt.step();
        for ((n, t), b) in params.iter().zip(&before) {
            let (got, want) = (t.to_vec(), fx.f32s(&format!("step.after{step}.{n}")));
            check(&format!("{} step {step} {n}", fx.name), &got, want, OUT_TOL);
            let delta = |w: &[f32]| w.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f32>>();
            check(&format!("{} step {step} update of {n}", fx.name), &delta(&got), &delta(want), 1e-3);
        }
    }
}

#[test]
fn language_model_adam_steps_match_fastai() {
    let fx = Fixture::load("lm.safetensors");
    let lm = LanguageModel::new(encoder_config(&fx, Dropouts::lm().scaled(0.0)), &mut Rng::new(0));
    fx.assign(&lm.named_params());
    adam_steps_match_fastai(&fx, &lm.named_params(), lm.param_groups(), &lm.no_decay());
}

#[test]
fn classifier_adam_steps_match_fastai() {
    let fx = Fixture::load("clas.safetensors");
    let (model, _) = classifier_and_docs(&fx, "train");
    adam_steps_match_fastai(&fx, &model.named_tensors(), model.param_groups(), &model.no_decay());
}

/// The LM fixture through the CUDA path (`ulmfit_cuda::lm`, FP32, dropout off): two
/// consecutive batches, state carried; the loss with AR/TAR, every gradient and every
/// layer's final (h, c) against fastai's. (The device step keeps no logits: its softmax
/// overwrites them with their gradient; the loss and the decoder's gradients stand for them.)
#[test]
fn language_model_on_the_gpu_matches_fastai() {
    let Some(gpu) = gpu_or_skip("language_model_on_the_gpu_matches_fastai", false) else { return };
    let fx = Fixture::load("lm.safetensors");
    let model = LanguageModel::new(encoder_config(&fx, Dropouts::lm().scaled(0.0)), &mut Rng::new(0));
    let named = model.named_params();
    fx.assign(&named);
    let shape = &fx.floats["b1.raw"].0; // [T, B, E]
    let c = &model.encoder.cfg;
    let cfg = LmConfig {
        vocab: c.vocab,
        emb: c.emb_sz,
        hidden: c.n_hid,
        layers: c.n_layers,
        t: shape[0],
        b: shape[1],
        drop: lm::Dropouts::off(),
        alpha: fx.f32_meta("alpha"),
        beta: fx.f32_meta("beta"),
        seed: 0,
    };
    let mut dev = LmCuda::new(&gpu, cfg, &lm_weights(&model), Hyper::default()).expect("the LM on the GPU");
    // The device's names for our (fastai's) tensor names, in `LmWeights::named` order.
    let mut names = vec!["0.encoder.weight".to_string(), "1.decoder.bias".to_string()];
    for l in 0..c.n_layers {
        let p = format!("0.rnns.{l}");
        names.extend([
            format!("{p}.module.weight_ih_l0"),
            format!("{p}.weight_hh_l0_raw"),
            format!("{p}.module.bias_ih_l0"),
            format!("{p}.module.bias_hh_l0"),
        ]);
    }
    for p in ["b1.", "b2."] {
        dev.set_batch(&fx.ids(&format!("{p}ids")), &fx.ids(&format!("{p}targets"))).expect("batch");
        dev.forward_backward().expect("forward and backward");
        let loss = dev.loss().expect("loss")[0];
        check(&format!("gpu lm {p}loss (CE + AR + TAR)"), &[loss], fx.f32s(&format!("{p}loss")), OUT_TOL);
        let grads = dev.grads().expect("gradients");
        for (name, (_, g)) in names.iter().zip(grads.named()) {
            check(&format!("gpu lm {p}grad {name}"), g, fx.f32s(&format!("{p}grad.{name}")), GRAD_TOL);
        }
        for (l, (h, c)) in dev.state().expect("state").iter().enumerate() {
            check(&format!("gpu lm {p}h.{l}"), h, fx.f32s(&format!("{p}h.{l}")), OUT_TOL);
            check(&format!("gpu lm {p}c.{l}"), c, fx.f32s(&format!("{p}c.{l}")), OUT_TOL);
        }
    }
}

/// The classifier fixtures through the CUDA path (`ulmfit_cuda::clas`, FP32): eval mode
/// (logits), and train mode with dropouts 0 (logits, loss, every gradient, the updated
/// running statistics), then the same batch with fastai's AR/TAR (every gradient of the
/// total; the device reports the cross-entropy). The masked case needs our CPU masks, which
/// the device does not draw.
#[test]
fn classifier_on_the_gpu_matches_fastai() {
    let Some(gpu) = gpu_or_skip("classifier_on_the_gpu_matches_fastai", false) else { return };
    let fx = Fixture::load("clas.safetensors");
    for case in ["eval", "train"] {
        let (model, docs) = classifier_and_docs(&fx, case);
        let p = format!("{case}.");
        let mut dev = ClasCuda::new(&gpu, clas_config(&model, docs.len(), 0), &clas_weights(&model))
            .expect("the classifier on the GPU");
        if case == "eval" {
            dev.probs(&docs).expect("eval forward");
            check(
                &format!("gpu classifier {p}logits"),
                &dev.logits().unwrap(),
                fx.f32s(&format!("{p}logits")),
                OUT_TOL,
            );
            continue;
        }
        let loss =
            dev.forward_backward(&docs, &fx.ids(&format!("{p}labels")), [0.0, 0.0]).expect("forward and backward");
        check(&format!("gpu classifier {p}logits"), &dev.logits().unwrap(), fx.f32s(&format!("{p}logits")), OUT_TOL);
        check(&format!("gpu classifier {p}loss"), &[loss], fx.f32s(&format!("{p}loss")), OUT_TOL);
        // The device's tensors come in `Classifier::param_groups` order; name them by identity.
        let named = model.named_tensors();
        let name_of = |t: &Tensor| named.iter().find(|(_, n)| n.same(t)).map(|(n, _)| n.clone()).expect("named");
        let params: Vec<Tensor> = model.param_groups().into_iter().flatten().collect();
        let check_grads = |dev: &ClasCuda, prefix: &str| {
            for (t, (_, g)) in params.iter().zip(dev.grads().expect("gradients").named()) {
                let n = name_of(t);
                check(&format!("gpu classifier {prefix}grad {n}"), g, fx.f32s(&format!("{prefix}grad.{n}")), GRAD_TOL);
            }
        };
        check_grads(&dev, &p);
        let after = dev.weights().expect("weights");
        let stats = named.iter().filter(|(n, _)| n.contains("running_")).zip(after.stats());
        for ((n, _), got) in stats {
            check(&format!("gpu classifier {p}updated {n}"), got, fx.f32s(&format!("{p}after.{n}")), OUT_TOL);
        }
        dev.set_weights(&clas_weights(&model)).expect("the fixture's weights and statistics again");
        let ar_tar = [fx.f32_meta("alpha"), fx.f32_meta("beta")];
        let loss = dev.forward_backward(&docs, &fx.ids(&format!("{p}labels")), ar_tar).expect("with AR/TAR");
        check(&format!("gpu classifier {p}loss with AR/TAR on"), &[loss], fx.f32s(&format!("{p}loss")), OUT_TOL);
        check_grads(&dev, &format!("{p}reg."));
    }
}
