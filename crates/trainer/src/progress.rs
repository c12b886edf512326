//! Progress of a training epoch: an indicatif bar with the smoothed loss, tokens/s and ETA
//! when stderr is a terminal; otherwise a plain line every 10% of the batches, so CI logs
//! stay readable. `tests/infra_progress.rs` checks the lines mode and the line format.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
pub enum ProgressMode {
    /// A bar on a terminal, lines otherwise.
    Auto,
    /// An indicatif bar on stderr.
    Bar,
    /// A plain line every 10% to the given writer (stderr in `Auto`).
    Lines(Box<dyn Write + Send>),
    /// Nothing.
    Hidden,
}

enum Sink {
    Bar(ProgressBar),
    Lines(Box<dyn Write + Send>),
    Hidden,
}

/// Progress of one epoch of `total` batches.
pub struct EpochProgress {
    label: String,
    total: usize,
    done: usize,
    tokens: u64,
    /// fastai-style smoothed loss: EMA with beta 0.98, bias-corrected.
    avg: f64,
    start: Instant,
    /// Last tenth of the epoch reported in lines mode.
    reported_tenth: usize,
    sink: Sink,
}

/// `1h02m03s` / `2m05s` / `7s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

/// The plain progress line: `LABEL  30% 150/500 loss 4.1234 812 tok/s elapsed 1m02s eta 2m25s`.
pub fn status_line(label: &str, done: usize, total: usize, loss: f64, tokens_per_s: f64, elapsed: Duration) -> String {
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let eta =
        if done == 0 { Duration::ZERO } else { elapsed.mul_f64((total.saturating_sub(done)) as f64 / done as f64) };
    format!(
        "{label} {pct:>3}% {done}/{total} loss {loss:.4} {tokens_per_s:.0} tok/s elapsed {} eta {}",
        format_duration(elapsed),
        format_duration(eta)
    )
}

impl EpochProgress {
    /// Progress for `total` batches, bar or lines depending on stderr.
    pub fn new(label: &str, total: usize) -> Self {
        EpochProgress::with_mode(label, total, ProgressMode::Auto)
    }

    /// Progress shown as `mode` says.
    pub fn with_mode(label: &str, total: usize, mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines(Box::new(std::io::stderr())),
            m => m,
        };
        let sink = match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::new(total as u64);
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid progress template")
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(label.to_string());
                Sink::Bar(bar)
            }
            ProgressMode::Lines(w) => Sink::Lines(w),
            ProgressMode::Hidden | ProgressMode::Auto => Sink::Hidden,
        };
        EpochProgress {
            label: label.into(),
            total,
            done: 0,
            tokens: 0,
            avg: 0.0,
            start: Instant::now(),
            reported_tenth: 0,
            sink,
        }
    }

    /// The smoothed loss so far (NaN before the first batch).
    pub fn smoothed_loss(&self) -> f64 {
        if self.done == 0 {
            f64::NAN
        } else {
            self.avg / (1.0 - 0.98f64.powi(self.done as i32))
        }
    }

    /// Training tokens per second since the start.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Records one finished batch with its loss and number of tokens.
    pub fn update(&mut self, loss: f64, tokens: usize) {
        self.done += 1;
        self.tokens += tokens as u64;
        self.avg = 0.98 * self.avg + 0.02 * loss;
        let (loss, tps) = (self.smoothed_loss(), self.tokens_per_s());
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_message(format!("loss {loss:.4} {tps:.0} tok/s"));
                bar.inc(1);
            }
            Sink::Lines(w) => {
                let tenth = (self.done * 10).checked_div(self.total).unwrap_or(10);
                if tenth > self.reported_tenth {
                    self.reported_tenth = tenth;
                    let line = status_line(&self.label, self.done, self.total, loss, tps, self.start.elapsed());
                    // Progress output failing (closed pipe) must not stop training.
                    let _ = writeln!(w, "{line}").and_then(|_| w.flush());
                }
            }
            Sink::Hidden => {}
        }
    }

    /// Ends the display; returns (seconds, tokens/s) of the epoch.
    pub fn finish(self) -> (f64, f64) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish();
        }
        (self.start.elapsed().as_secs_f64(), self.tokens_per_s())
    }
}
