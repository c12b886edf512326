//! ulmfit-trainer: the ULMFiT method on top of the engine.
//!
//! - `awd_lstm.rs`: the AWD-LSTM encoder and tied language model, with fastai's dropouts.
//! - `classifier.rs`: BPT3C encoder reads, concat pooling, the batch-norm head;
//!   `clas_reg.rs`: fastai's AR/TAR on the classifier's encoder output.
//! - `train.rs`: training steps and evaluation loops; `stages.rs`: epochs of a stage.
//! - `data.rs`: corpora and task splits; `pipeline.rs`: the whole method from one config.
//! - `schedule.rs`: slanted triangular LR, one-cycle with cyclical momentum, discriminative LRs.
//! - `backend.rs`: where a stage's steps run (CPU autograd, or the GPU through `gpu_lm.rs` and
//!   `gpu_clas.rs`, device-resident copies of the LM and classifier from `ulmfit_cuda`).
//! - `checkpoint.rs`: safetensors weights + vocabulary + config, written atomically;
//!   `models.rs`: saving and loading the LM, encoder and classifier, vocabulary extension.
//! - `control.rs`, `resume.rs`: Ctrl-C and stop requests, training state and `--resume`.
//! - `metrics.rs`, `plot.rs`, `progress.rs`: per-epoch metrics files, curves, progress bars.
//! - `curves.rs`: a run's loss and LR curves; `lr_find.rs`: the LR range test on pretraining.
//! - `config.rs`: the TOML pipeline configuration.

pub mod awd_lstm;
pub mod backend;
pub mod checkpoint;
pub mod clas_reg;
pub mod classifier;
pub mod config;
pub mod control;
pub mod curves;
pub mod data;
pub mod gpu_clas;
pub mod gpu_lm;
pub mod lr_find;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod resume;
pub mod schedule;
pub mod stages;
pub mod train;
