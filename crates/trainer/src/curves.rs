//! A run's training curves from its metrics rows: `loss.svg` (train loss and, where the
//! stage validates, valid loss per epoch) and `lr.svg` (the top group's LR at the end of each
//! epoch), x being the epoch index across all stages in order. Drawn with `plot::plot_lines`;
//! the unit test below checks both files are written with one curve each.

use std::path::Path;

use crate::metrics::EpochMetrics;
use crate::plot::{plot_lines, PlotError};

/// Draws `dir/loss.svg` and `dir/lr.svg` from `rows` (one per epoch, in run order).
pub fn draw(dir: &Path, rows: &[EpochMetrics]) -> Result<(), PlotError> {
    let x = |i: usize| (i + 1) as f64;
    let train: Vec<(f64, f64)> = rows.iter().enumerate().map(|(i, r)| (x(i), r.train_loss)).collect();
    let valid: Vec<(f64, f64)> = rows.iter().enumerate().filter_map(|(i, r)| r.valid_loss.map(|v| (x(i), v))).collect();
    let lr: Vec<(f64, f64)> = rows.iter().enumerate().map(|(i, r)| (x(i), r.lr)).collect();
    let mut losses = vec![("train loss", train.as_slice())];
    if !valid.is_empty() {
        losses.push(("valid loss", valid.as_slice()));
    }
    plot_lines(&dir.join("loss.svg"), "loss per epoch", "epoch (all stages)", "loss", &losses, false)?;
    plot_lines(
        &dir.join("lr.svg"),
        "learning rate at epoch end",
        "epoch (all stages)",
        "lr",
        &[("lr", lr.as_slice())],
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: &str, epoch: usize, train_loss: f64, valid_loss: Option<f64>, lr: f64) -> EpochMetrics {
        EpochMetrics {
            stage: stage.into(),
            epoch,
            step: 10 * epoch as u64,
            train_loss,
            valid_loss,
            accuracy: None,
            perplexity: None,
            lr,
            seconds: 1.0,
            tokens_per_s: 100.0,
        }
    }

    #[test]
    fn draws_loss_and_lr_curves() {
        let dir = std::env::temp_dir().join(format!("ulmfit-curves-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = [
            row("pretrain", 1, 5.0, Some(4.8), 1e-3),
            row("pretrain", 2, 4.5, Some(4.6), 1e-4),
            row("classifier-1", 1, 0.7, None, 2e-3),
        ];
        draw(&dir, &rows).unwrap();
        for (file, curves) in [("loss.svg", 2), ("lr.svg", 1)] {
            let svg = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{file} is not an SVG document: {svg:.80}"
            );
            assert_eq!(svg.matches("<polyline").count(), curves, "{file}: expected {curves} curves");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
