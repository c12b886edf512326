//! The AWD-LSTM encoder and its tied language-model decoder, as fastai v2 builds them
//! (`fastai/text/models/awdlstm.py`, `core.py`): embedding -> embedding dropout (whole
//! words) -> input dropout -> LSTM layers with DropConnect on W_hh and variational hidden
//! dropout between them; the decoder applies output dropout and shares the embedding
//! matrix. Hidden state is carried across batches, detached, and reset per epoch.
//!
//! Sequences are time-major: token ids `[T, B]` row-major (`ids[t * B + b]`).

use ulmfit_lstm::op::lstm;
use ulmfit_lstm::DropMask;
use ulmfit_tensor::{Result, Rng, Tensor};
use ulmfit_text::vocab::PAD_ID;

use crate::config::Dropouts;

/// Sizes and dropouts of an AWD-LSTM.
#[derive(Clone, Debug, PartialEq)]
pub struct AwdLstmConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Embedding size E (also the last layer's hidden size, for the tied decoder).
    pub emb_sz: usize,
    /// Hidden size of every layer but the last.
    pub n_hid: usize,
    /// Number of LSTM layers.
    pub n_layers: usize,
    /// The five dropouts, `drop_mult` already applied.
    pub drop: Dropouts,
}

impl AwdLstmConfig {
    /// fastai's language model (`awd_lstm_lm_config`) for a vocabulary of `vocab` words.
    pub fn lm(vocab: usize) -> Self {
        AwdLstmConfig { vocab, emb_sz: 400, n_hid: 1152, n_layers: 3, drop: Dropouts::lm() }
    }

    /// (input size, hidden size) of each layer: E -> n_hid -> ... -> E.
    pub fn layer_sizes(&self) -> Vec<(usize, usize)> {
        (0..self.n_layers)
            .map(|l| {
                let i = if l == 0 { self.emb_sz } else { self.n_hid };
                let h = if l + 1 == self.n_layers { self.emb_sz } else { self.n_hid };
                (i, h)
            })
            .collect()
    }
}

/// Parameters of one LSTM layer, PyTorch layout (gate order i, f, g, o).
pub struct LstmWeights {
    /// [4H, I]
    pub w_ih: Tensor,
    /// [4H, H], before DropConnect (fastai's `weight_hh_l0_raw`).
    pub w_hh: Tensor,
    /// [4H]
    pub b_ih: Tensor,
    /// [4H]
    pub b_hh: Tensor,
}

/// What one encoder pass returns.
pub struct EncoderOutput {
    /// Last layer's output before output dropout, [T, B, E] (TAR reads this).
    pub raw: Tensor,
}

/// The AWD-LSTM encoder: embedding plus LSTM stack, with carried state.
pub struct AwdLstm {
    /// Sizes and dropouts in force.
    pub cfg: AwdLstmConfig,
    /// [V, E]; the LM decoder shares it.
    pub embedding: Tensor,
    /// One entry per layer, bottom first.
    pub layers: Vec<LstmWeights>,
    /// (h, c) per layer, [B, H] each, detached; empty after `reset`.
    state: Vec<(Tensor, Tensor)>,
}

fn param(t: Tensor) -> Tensor {
    Tensor::param(t.to_vec(), t.shape()).expect("same shape")
}

impl AwdLstm {
    /// A freshly initialised encoder: embedding uniform(-0.1, 0.1) as fastai, LSTM weights
    /// uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch.
    pub fn new(cfg: AwdLstmConfig, rng: &mut Rng) -> Self {
        let embedding = param(rng.uniform_tensor(&[cfg.vocab, cfg.emb_sz], -0.1, 0.1));
        let layers = cfg
            .layer_sizes()
            .into_iter()
            .map(|(i, h)| {
                let k = 1.0 / (h as f32).sqrt();
                LstmWeights {
                    w_ih: param(rng.uniform_tensor(&[4 * h, i], -k, k)),
                    w_hh: param(rng.uniform_tensor(&[4 * h, h], -k, k)),
                    b_ih: param(rng.uniform_tensor(&[4 * h], -k, k)),
                    b_hh: param(rng.uniform_tensor(&[4 * h], -k, k)),
                }
            })
            .collect();
        AwdLstm { cfg, embedding, layers, state: Vec::new() }
    }

    /// Forgets the carried hidden state (start of an epoch, or of a new document batch).
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// The carried state (h, c) of every layer, [B, H] each; zeros of batch `b` when there is
    /// none (after `reset`). For a checkpoint taken mid-epoch.
    pub fn carried_state(&self, b: usize) -> Vec<(Tensor, Tensor)> {
        if !self.state.is_empty() {
            return self.state.clone();
        }
        let zeros = |h: usize| (Tensor::zeros(&[b, h]), Tensor::zeros(&[b, h]));
        self.cfg.layer_sizes().into_iter().map(|(_, h)| zeros(h)).collect()
    }

    /// Replaces the carried state (detached), e.g. by one `carried_state` returned.
    pub fn set_carried_state(&mut self, state: Vec<(Tensor, Tensor)>) {
        self.state = state.into_iter().map(|(h, c)| (h.detach(), c.detach())).collect();
    }

    /// Keeps the carried state of the first `rows` rows only (BPT3C: the batch shrinks as
    /// short documents end).
    pub fn keep_rows(&mut self, rows: usize) -> Result<()> {
        for (h, c) in &mut self.state {
            if h.dim(0) > rows {
                *h = h.narrow(0, 0, rows)?;
                *c = c.narrow(0, 0, rows)?;
            }
        }
        Ok(())
    }

    /// Runs `ids` [T, B] through the encoder from the carried state (zeros after `reset`
    /// or when the batch size changed); dropouts only when `train`. The final state is
    /// kept, detached, for the next call.
    pub fn forward(&mut self, ids: &[u32], t: usize, b: usize, train: bool, rng: &mut Rng) -> Result<EncoderOutput> {
        let cfg = &self.cfg;
        let d = cfg.drop;
        if self.state.first().is_some_and(|(h, _)| h.dim(0) != b) {
            self.state.clear();
        }
        // [T*B, E]; fastai's nn.Embedding has padding_idx = xxpad: no gradient into its row.
        let mut x = self.embedding.embedding_with_padding(ids, PAD_ID)?;
        if train && d.embed_p > 0.0 {
            // Embedding dropout: one keep/drop draw per vocabulary word, gathered per token
            // (same as masking whole rows of the table, without touching all V rows).
            let word_mask = rng.dropout_mask(&[cfg.vocab], d.embed_p).to_vec();
            let per_token: Vec<f32> = ids.iter().map(|&i| word_mask[i as usize]).collect();
            x = x.mul(&Tensor::from_vec(per_token, &[ids.len(), 1])?)?;
        }
        let mut x = x.reshape(&[t, b, cfg.emb_sz])?;
        if train && d.input_p > 0.0 {
            x = x.mul(&rng.dropout_mask(&[1, b, cfg.emb_sz], d.input_p))?;
        }
        let n = self.layers.len();
        let mut new_state = Vec::with_capacity(n);
        for (l, w) in self.layers.iter().enumerate() {
            let h = w.w_hh.dim(1);
            let (h0, c0) = match self.state.get(l) {
                Some((h0, c0)) => (h0.clone(), c0.clone()),
                None => (Tensor::zeros(&[b, h]), Tensor::zeros(&[b, h])),
            };
            // DropConnect: one mask on W_hh for the whole sequence, applied inside the op.
            let drop = (train && d.weight_p > 0.0).then(|| DropMask { p: d.weight_p, seed: rng.next_u64() });
            let step = lstm(&x, &w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh, &h0, &c0, drop)?;
            new_state.push((step.h_n, step.c_n));
            let y = step.y;
            x = if train && l + 1 < n && d.hidden_p > 0.0 {
                y.mul(&rng.dropout_mask(&[1, b, h], d.hidden_p))?
            } else {
                y
            };
        }
        self.state = new_state;
        Ok(EncoderOutput { raw: x })
    }

    /// Every parameter with fastai's name for it (`0.encoder.weight`,
    /// `0.rnns.{l}.module.weight_ih_l0`, `...weight_hh_l0_raw`, biases).
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("0.encoder.weight".to_string(), self.embedding.clone())];
        for (l, w) in self.layers.iter().enumerate() {
            let p = format!("0.rnns.{l}");
            out.push((format!("{p}.weight_hh_l0_raw"), w.w_hh.clone()));
            out.push((format!("{p}.module.weight_ih_l0"), w.w_ih.clone()));
            out.push((format!("{p}.module.bias_ih_l0"), w.b_ih.clone()));
            out.push((format!("{p}.module.bias_hh_l0"), w.b_hh.clone()));
        }
        out
    }

    /// The parameters of layer `l`, in one list.
    pub fn layer_params(&self, l: usize) -> Vec<Tensor> {
        let w = &self.layers[l];
        vec![w.w_ih.clone(), w.w_hh.clone(), w.b_ih.clone(), w.b_hh.clone()]
    }
}

/// The AWD-LSTM language model: encoder plus tied linear decoder with bias.
pub struct LanguageModel {
    /// The encoder; its embedding doubles as the decoder weight.
    pub encoder: AwdLstm,
    /// Decoder bias, [V].
    pub decoder_bias: Tensor,
}

/// The pieces of one LM forward that the loss needs.
pub struct LmOutput {
    /// [T*B, V]
    pub logits: Tensor,
    /// Last layer's output before output dropout, [T, B, E].
    pub raw: Tensor,
    /// After output dropout, [T, B, E].
    pub dropped: Tensor,
}

impl LanguageModel {
    /// A fresh model; decoder bias 0.
    pub fn new(cfg: AwdLstmConfig, rng: &mut Rng) -> Self {
        let vocab = cfg.vocab;
        LanguageModel {
            encoder: AwdLstm::new(cfg, rng),
            decoder_bias: Tensor::param(vec![0.0; vocab], &[vocab]).expect("shape"),
        }
    }

    /// Logits for the next token at every position of `ids` [T, B].
    pub fn forward(&mut self, ids: &[u32], t: usize, b: usize, train: bool, rng: &mut Rng) -> Result<LmOutput> {
        let (raw, dropped) = self.encode(ids, t, b, train, rng)?;
        let e = self.encoder.cfg.emb_sz;
        let logits = dropped.reshape(&[t * b, e])?.linear(&self.encoder.embedding, Some(&self.decoder_bias))?;
        Ok(LmOutput { logits, raw, dropped })
    }

    /// The encoder's last output before and after output dropout, each [T, B, E].
    pub fn encode(&mut self, ids: &[u32], t: usize, b: usize, train: bool, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let raw = self.encoder.forward(ids, t, b, train, rng)?.raw;
        let e = self.encoder.cfg.emb_sz;
        let p = self.encoder.cfg.drop.output_p;
        let dropped = if train && p > 0.0 { raw.mul(&rng.dropout_mask(&[1, b, e], p))? } else { raw.clone() };
        Ok((raw, dropped))
    }

    /// Mean cross-entropy of the decoder's logits for `dropped` [T, B, E] against
    /// `targets` [T*B], the decoder and the loss fused (`Tensor::linear_cross_entropy`): the
    /// training step never stores the [T*B, V] logits.
    pub fn decoder_cross_entropy(&self, dropped: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let rows = dropped.numel() / self.encoder.cfg.emb_sz;
        let x = dropped.reshape(&[rows, self.encoder.cfg.emb_sz])?;
        x.linear_cross_entropy(&self.encoder.embedding, Some(&self.decoder_bias), targets, None)
    }

    /// Named parameters: the encoder's plus `1.decoder.bias` (the decoder weight is tied).
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = self.encoder.named_params();
        out.push(("1.decoder.bias".to_string(), self.decoder_bias.clone()));
        out
    }

    /// fastai's LM parameter groups: one per LSTM layer, then embedding + decoder.
    pub fn param_groups(&self) -> Vec<Vec<Tensor>> {
        let mut groups: Vec<Vec<Tensor>> =
            (0..self.encoder.layers.len()).map(|l| self.encoder.layer_params(l)).collect();
        groups.push(vec![self.encoder.embedding.clone(), self.decoder_bias.clone()]);
        groups
    }

    /// The parameters fastai leaves out of weight decay (`wd_bn_bias=False`): the decoder
    /// bias. (The LSTM biases are decayed: fastai's `norm_bias_params` does not find them.)
    pub fn no_decay(&self) -> Vec<Tensor> {
        vec![self.decoder_bias.clone()]
    }
}

/// The LM loss: cross-entropy `ce` plus AR (`alpha * mean(dropped^2)`) and TAR
/// (`beta * mean((raw_t - raw_{t-1})^2)`) on the encoder's output (`LanguageModel::encode`),
/// fastai's `RNNRegularizer`. Returns (total loss to back-propagate, cross-entropy alone for
/// reporting).
pub fn lm_loss(ce: Tensor, raw: &Tensor, dropped: &Tensor, alpha: f32, beta: f32) -> Result<(Tensor, f32)> {
    let ce_value = ce.item()?;
    let mut loss = ce;
    if alpha > 0.0 {
        loss = loss.add(&dropped.powf(2.0).mean_all()?.scale(alpha))?;
    }
    let t = raw.dim(0);
    if beta > 0.0 && t > 1 {
        let diff = raw.narrow(0, 1, t - 1)?.sub(&raw.narrow(0, 0, t - 1)?)?;
        loss = loss.add(&diff.powf(2.0).mean_all()?.scale(beta))?;
    }
    Ok((loss, ce_value))
}
