//! Sizes, dropouts, loss weights and optimizer settings of the AWD-LSTM LM step, and the
//! errors of the `lm` module. Defaults are fastai's `awd_lstm_lm_config` (3 layers
//! 400-1152-1152-400, tied decoder) and the step of `scripts/bench_lm_step_torch.py`.

use ulmfit_lstm::LstmDims;

/// The padding token (`xxpad`): the embedding lookup passes no gradient into its row (fastai's
/// `padding_idx`; `lm_embed_bwd`); the tied decoder's gradient on that row stays.
pub const PAD: u32 = 1;

/// Alignment, in f32, of the padded vocabulary ([`LmConfig::vocab_padded`]) and of every
/// tensor slot of the flat parameter buffer (`super::params::Layout`).
pub const VOCAB_ALIGN: usize = 64;

/// Dropout probabilities (0 turns one off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropouts {
    /// Whole vocabulary rows of the embedding (fastai `embed_p`).
    pub embed: f32,
    /// Variational dropout on the embedding output (`input_p`).
    pub input: f32,
    /// DropConnect on each W_hh, once per sequence (`weight_p`).
    pub weight: f32,
    /// Variational dropout between LSTM layers (`hidden_p`).
    pub hidden: f32,
    /// Variational dropout on the top layer's output, before the decoder (`output_p`).
    pub output: f32,
}

impl Dropouts {
    /// fastai's language-model dropouts.
    pub fn awd_lstm() -> Self {
        Dropouts { embed: 0.02, input: 0.25, weight: 0.2, hidden: 0.15, output: 0.1 }
    }

    /// Every dropout off.
    pub fn off() -> Self {
        Dropouts { embed: 0.0, input: 0.0, weight: 0.0, hidden: 0.0, output: 0.0 }
    }
}

/// The model and batch shape of one LM step: V vocabulary, E embedding (= top layer) width,
/// H hidden width of the other layers, T steps, B batch.
#[derive(Clone, Debug, PartialEq)]
pub struct LmConfig {
    /// V
    pub vocab: usize,
    /// E
    pub emb: usize,
    /// H
    pub hidden: usize,
    /// Number of LSTM layers (>= 1).
    pub layers: usize,
    /// T
    pub t: usize,
    /// B
    pub b: usize,
    /// Dropout probabilities.
    pub drop: Dropouts,
    /// AR weight (on the dropped output).
    pub alpha: f32,
    /// TAR weight (on the raw output).
    pub beta: f32,
    /// Seed of every dropout mask.
    pub seed: u64,
}

impl LmConfig {
    /// fastai's AWD-LSTM LM (E 400, H 1152, 3 layers, all dropouts, alpha 2, beta 1).
    pub fn awd_lstm(vocab: usize, t: usize, b: usize) -> Self {
        LmConfig {
            vocab,
            emb: 400,
            hidden: 1152,
            layers: 3,
            t,
            b,
            drop: Dropouts::awd_lstm(),
            alpha: 2.0,
            beta: 1.0,
            seed: 0,
        }
    }

    /// Dims of each LSTM layer: E -> H -> ... -> H -> E.
    pub fn layer_dims(&self) -> Vec<LstmDims> {
        (0..self.layers)
            .map(|l| LstmDims {
                t: self.t,
                b: self.b,
                i: if l == 0 { self.emb } else { self.hidden },
                h: if l + 1 == self.layers { self.emb } else { self.hidden },
            })
            .collect()
    }

    /// Rows of the decoder, N = T * B.
    pub fn rows(&self) -> usize {
        self.t * self.b
    }

    /// Vp: V rounded up to a multiple of [`VOCAB_ALIGN`]. The logits' row stride and the
    /// rows of the embedding's slot; the Vp - V padding rows and columns stay 0, so every
    /// decoder GEMM operand is 256-byte aligned (cuBLAS's fast TF32 kernels need 16) and the
    /// padding adds nothing to any product.
    pub fn vocab_padded(&self) -> usize {
        self.vocab.div_ceil(VOCAB_ALIGN) * VOCAB_ALIGN
    }

    /// Checks sizes and probabilities.
    pub fn validate(&self) -> Result<(), LmError> {
        let sizes = [self.vocab, self.emb, self.hidden, self.layers, self.t, self.b];
        if sizes.contains(&0) {
            return Err(LmError::Config(format!("every size must be positive: {self:?}")));
        }
        if self.vocab >= u32::MAX as usize || self.rows() >= i32::MAX as usize / self.vocab_padded().max(self.emb) {
            return Err(LmError::Config(format!(
                "V {} with T*B {} is too large for one step",
                self.vocab,
                self.rows()
            )));
        }
        let d = self.drop;
        for (name, p) in
            [("embed", d.embed), ("input", d.input), ("weight", d.weight), ("hidden", d.hidden), ("output", d.output)]
        {
            if !(0.0..1.0).contains(&p) {
                return Err(LmError::Config(format!("dropout {name} = {p} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

/// Adam(W) and clipping settings; read by the kernels from device memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    /// Learning rate.
    pub lr: f32,
    /// Adam beta1.
    pub beta1: f32,
    /// Adam beta2.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay (each step multiplies the weights by 1 - lr * wd).
    pub weight_decay: f32,
    /// Global gradient-norm clip (<= 0: none).
    pub clip: f32,
}

impl Default for Hyper {
    /// The bench's settings: lr 1e-3, betas (0.9, 0.99), eps 1e-5, no decay, clip 0.1.
    fn default() -> Self {
        Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-5, weight_decay: 0.0, clip: 0.1 }
    }
}

/// Floats in one parameter group's slot of the device hyper-parameter buffer.
pub const HYPER_LEN: usize = 8;

impl Hyper {
    /// The device slot of a group `[lr, beta1, beta2, eps, weight_decay, max_norm, frozen,
    /// step_offset]` (lm_optim.cu): Adam's t is the step counter minus `step_offset`.
    pub fn to_slot(&self, frozen: bool, step_offset: i64) -> [f32; HYPER_LEN] {
        let (h, frozen) = (self, if frozen { 1.0 } else { 0.0 });
        [h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.clip, frozen, step_offset as f32]
    }
}

/// The optimizer settings of one parameter group (an LSTM layer, or the embedding with the
/// decoder bias): its Adam(W) settings (the clip is group 0's), whether it is frozen, and
/// how many updates it has had (its Adam bias-correction count, as `ulmfit_tensor`'s
/// per-parameter `Moments::steps`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupHyper {
    /// Adam(W) settings.
    pub hyper: Hyper,
    /// Frozen: no update, no moment change, not in the gradient norm.
    pub frozen: bool,
    /// Updates this group has had before the next step.
    pub updates: u32,
}

/// What can go wrong in an LM step.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// A device error (no driver, out of memory, a failed launch).
    #[error(transparent)]
    Cuda(#[from] crate::Error),
    /// Sizes or probabilities that cannot run.
    #[error("LM config: {0}")]
    Config(String),
    /// A batch with the wrong shape or a token outside the vocabulary.
    #[error("LM batch: {0}")]
    Batch(String),
}
