//! Sizes, dropouts and optimizer settings of the classifier step, and the errors of the
//! `clas` module. Defaults follow fastai's text classifier (`awd_lstm_clas_config`,
//! `get_text_classifier`: bptt 72, max_len 1440, head 3E -> 50 -> C).

use ulmfit_lstm::LstmDims;

/// Dropout probabilities of the classifier (0 turns one off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClasDropouts {
    /// Whole vocabulary rows of the embedding (`embed_p`).
    pub embed: f32,
    /// Variational dropout on the embedding output (`input_p`).
    pub input: f32,
    /// DropConnect on each W_hh (`weight_p`), one mask per chunk (fastai's `WeightDropout`).
    pub weight: f32,
    /// Variational dropout between LSTM layers (`hidden_p`).
    pub hidden: f32,
    /// Dropout before the head's first linear layer (fastai: the encoder's `output_p`).
    pub head1: f32,
    /// Dropout before the head's second linear layer (fastai: 0.1).
    pub head2: f32,
}

impl ClasDropouts {
    /// fastai's classifier dropouts (`awd_lstm_clas_config`, drop_mult 0.5).
    pub fn fastai() -> Self {
        ClasDropouts { embed: 0.025, input: 0.2, weight: 0.25, hidden: 0.15, head1: 0.2, head2: 0.1 }
    }

    /// Every dropout off.
    pub fn off() -> Self {
        ClasDropouts { embed: 0.0, input: 0.0, weight: 0.0, hidden: 0.0, head1: 0.0, head2: 0.0 }
    }

    fn named(&self) -> [(&'static str, f32); 6] {
        [
            ("embed", self.embed),
            ("input", self.input),
            ("weight", self.weight),
            ("hidden", self.hidden),
            ("head1", self.head1),
            ("head2", self.head2),
        ]
    }
}

/// The classifier's shape: V vocabulary, E embedding (= top layer) width, H hidden width of
/// the other layers, F head features (fastai: 50), C classes, at most B documents a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ClasConfig {
    /// V
    pub vocab: usize,
    /// E
    pub emb: usize,
    /// H
    pub hidden: usize,
    /// Number of LSTM layers (>= 1).
    pub layers: usize,
    /// F, width of the head's middle layer.
    pub features: usize,
    /// C
    pub classes: usize,
    /// Chunk length of BPT3C (fastai: 72).
    pub bptt: usize,
    /// Steps pooled at the end of each document (fastai: 1440).
    pub max_len: usize,
    /// Largest batch B.
    pub batch: usize,
    /// Dropout probabilities.
    pub drop: ClasDropouts,
    /// Seed of every dropout mask.
    pub seed: u64,
}

impl ClasConfig {
    /// Dims of LSTM layer `l` for a chunk of `t` steps over `b` rows: E -> H -> ... -> E.
    pub fn layer_dims(&self, l: usize, t: usize, b: usize) -> LstmDims {
        LstmDims {
            t,
            b,
            i: if l == 0 { self.emb } else { self.hidden },
            h: if l + 1 == self.layers { self.emb } else { self.hidden },
        }
    }

    /// Number of parameter groups: embedding, each LSTM layer, head (fastai's order).
    pub fn groups(&self) -> usize {
        self.layers + 2
    }

    /// Checks sizes and probabilities.
    pub fn validate(&self) -> Result<(), ClasError> {
        let c = self;
        let sizes = [c.vocab, c.emb, c.hidden, c.layers, c.features, c.classes, c.bptt, c.max_len, c.batch];
        if c.layers > 60 {
            return Err(ClasError::Config(format!("{} layers: at most 60 (dropout mask ids)", c.layers)));
        }
        if sizes.contains(&0) || c.vocab < 2 {
            return Err(ClasError::Config(format!("every size must be positive (vocab >= 2 for the pad id 1): {c:?}")));
        }
        if c.max_len < c.bptt {
            let (m, b) = (c.max_len, c.bptt);
            return Err(ClasError::Config(format!("max_len {m} < bptt {b}: the pooled window could be empty")));
        }
        if c.batch * c.bptt * 4 * c.emb.max(c.hidden) >= i32::MAX as usize || c.vocab >= u32::MAX as usize {
            return Err(ClasError::Config(format!("batch {} x bptt {} is too large for one chunk", c.batch, c.bptt)));
        }
        for (name, p) in c.drop.named() {
            if !(0.0..1.0).contains(&p) {
                return Err(ClasError::Config(format!("dropout {name} = {p} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

/// Optimizer settings of one step: a learning rate and a frozen flag per parameter group
/// (embedding, LSTM layer 0.., head), Adam(W) constants, and the global-norm clip.
#[derive(Clone, Debug, PartialEq)]
pub struct ClasHyper {
    /// Learning rate of each group.
    pub lrs: Vec<f32>,
    /// Frozen groups: no update, no moment change, left out of the clip norm.
    pub frozen: Vec<bool>,
    /// Adam beta1.
    pub beta1: f32,
    /// Adam beta2.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip (None: none).
    pub clip: Option<f32>,
    /// Weight of fastai's AR on the encoder output (`TextLearner`: 2; 0: none).
    pub alpha: f32,
    /// Weight of fastai's TAR on the encoder output (`TextLearner`: 1; 0: none).
    pub beta: f32,
}

impl ClasHyper {
    /// Every group trainable at `lr`, fastai's Adam (0.9, 0.99, eps 1e-5), no decay, no clip,
    /// no AR/TAR.
    pub fn uniform(cfg: &ClasConfig, lr: f32) -> Self {
        let g = cfg.groups();
        ClasHyper {
            lrs: vec![lr; g],
            frozen: vec![false; g],
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-5,
            weight_decay: 0.0,
            clip: None,
            alpha: 0.0,
            beta: 0.0,
        }
    }

    /// Checks that there is one learning rate and one flag per group.
    pub fn validate(&self, cfg: &ClasConfig) -> Result<(), ClasError> {
        let g = cfg.groups();
        if self.lrs.len() != g || self.frozen.len() != g {
            return Err(ClasError::Config(format!(
                "{} learning rates and {} frozen flags for {g} parameter groups (embedding, {} layers, head)",
                self.lrs.len(),
                self.frozen.len(),
                cfg.layers
            )));
        }
        Ok(())
    }
}

/// What can go wrong in a classifier step.
#[derive(Debug, thiserror::Error)]
pub enum ClasError {
    /// A device error (no driver, out of memory, a failed launch).
    #[error(transparent)]
    Cuda(#[from] crate::Error),
    /// Sizes, probabilities or weights that cannot run.
    #[error("classifier config: {0}")]
    Config(String),
    /// A batch that is empty, unsorted, too large, or holds a token or label out of range.
    #[error("classifier batch: {0}")]
    Batch(String),
}
