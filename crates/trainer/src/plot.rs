//! Line charts as hand-written SVG (loss and LR curves, the LR finder), and the LR range test
//! itself: fastai's `LRFinder` schedule, stop rule and "steepest" suggestion.
//!
//! Checked in `tests/infra_plot.rs`: axis ticks and point placement in the SVG, the finder's
//! exponential LRs, smoothing (fastai `AvgSmoothLoss`), stopping and suggestion.

use std::fmt::Write as _;
use std::path::Path;

const W: f64 = 720.0;
const H: f64 = 440.0;
/// Plot area margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (80.0, 150.0, 40.0, 60.0);
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// Error naming the image file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write plot: {source}")]
pub struct PlotError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Round tick positions covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten, ~6 ticks.
pub fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|&s| s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Powers of ten covering `[lo, hi]` (both > 0).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    (lo.log10().ceil() as i32..=(hi.log10() + 1e-9).floor() as i32).map(|e| 10f64.powi(e)).collect()
}

/// A tick label: plain for moderate magnitudes, `1e-5` style otherwise.
fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:e}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Points that can be drawn: finite, and x > 0 on a log axis.
fn drawable(p: &(f64, f64), log_x: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!log_x || p.0 > 0.0)
}

/// `[lo, hi]` of `vals`, widened when empty or flat.
fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0))
    } else {
        (lo, hi)
    }
}

/// The SVG text of a line chart: one polyline per series (broken at points that cannot be
/// drawn: NaN, infinite, x <= 0 on a log axis), axes with ticks, labels and a legend.
pub fn render_svg(title: &str, x_label: &str, y_label: &str, series: &[(&str, &[(f64, f64)])], log_x: bool) -> String {
    let pts = || series.iter().flat_map(|(_, s)| s.iter()).filter(|p| drawable(p, log_x));
    let fx = |x: f64| if log_x { x.log10() } else { x };
    let (x0, x1) = range(pts().map(|p| fx(p.0)));
    let (y0, y1) = range(pts().map(|p| p.1));
    let (ml, mr, mt, mb) = MARGIN;
    let (pw, ph) = (W - ml - mr, H - mt - mb);
    let sx = |x: f64| ml + (fx(x) - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        ml + pw / 2.0,
        escape(title)
    );
    let _ = writeln!(s, r#"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let xticks = if log_x { log_ticks(10f64.powf(x0), 10f64.powf(x1)) } else { linear_ticks(x0, x1) };
    for t in xticks {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.2}" y1="{mt}" x2="{x:.2}" y2="{}" stroke="#ddd"/><text x="{x:.2}" y="{}" text-anchor="middle">{}</text>"##,
            mt + ph,
            mt + ph + 16.0,
            label(t)
        );
    }
    for t in linear_ticks(y0, y1) {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.2}" x2="{}" y2="{y:.2}" stroke="#ddd"/><text x="{}" y="{:.2}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ =
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, ml + pw / 2.0, H - 16.0, escape(x_label));
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        mt + ph / 2.0,
        escape(y_label)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Runs of drawable points become separate polylines.
        for run in pts.split(|p| !drawable(p, log_x)).filter(|r| !r.is_empty()) {
            let coords: Vec<String> = run.iter().map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                coords.join(" ")
            );
        }
        let ly = mt + 14.0 + 18.0 * i as f64;
        let lx = ml + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `render_svg(..)` to `path` (an `.svg` file).
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, &[(f64, f64)])],
    log_x: bool,
) -> Result<(), PlotError> {
    std::fs::write(path, render_svg(title, x_label, y_label, series, log_x))
        .map_err(|source| PlotError { path: path.to_path_buf(), source })
}

/// What the LR finder says after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrFindStep {
    /// Take another step at `LrFinder::lr(step)`.
    Continue,
    /// The smoothed loss went above 4x its best, or is not finite.
    Diverged,
    /// All `steps` were taken.
    Done,
}

/// fastai's LR range test: the LR grows exponentially from `start` to `end` over `steps`
/// mini-batches; the loss is smoothed as fastai's `AvgSmoothLoss(beta = 0.98)`.
#[derive(Clone, Debug)]
pub struct LrFinder {
    /// First LR (fastai 1e-7).
    pub start: f64,
    /// Last LR (fastai 10).
    pub end: f64,
    /// Number of steps (fastai 100).
    pub steps: usize,
    avg: f64,
    best: f64,
    /// (lr, smoothed loss) of each recorded step.
    pub history: Vec<(f64, f64)>,
}

impl Default for LrFinder {
    fn default() -> Self {
        LrFinder::new(1e-7, 10.0, 100)
    }
}

impl LrFinder {
    /// A finder from `start` to `end` over `steps`.
    pub fn new(start: f64, end: f64, steps: usize) -> Self {
        LrFinder { start, end, steps, avg: 0.0, best: f64::INFINITY, history: Vec::new() }
    }

    /// The LR of step `i`: `start * (end / start)^(i / steps)` (fastai `SchedExp`).
    pub fn lr(&self, i: usize) -> f64 {
        self.start * (self.end / self.start).powf(i as f64 / self.steps as f64)
    }

    /// Records the raw loss of the step just taken (at `lr(history.len())`) and says whether to go on.
    pub fn record(&mut self, loss: f64) -> LrFindStep {
        const BETA: f64 = 0.98;
        let i = self.history.len();
        self.avg = BETA * self.avg + (1.0 - BETA) * loss;
        let smooth = self.avg / (1.0 - BETA.powi(i as i32 + 1));
        self.history.push((self.lr(i), smooth));
        self.best = self.best.min(smooth);
        if !smooth.is_finite() || smooth > 4.0 * self.best {
            LrFindStep::Diverged
        } else if self.history.len() >= self.steps {
            LrFindStep::Done
        } else {
            LrFindStep::Continue
        }
    }

    /// fastai's `steep` suggestion on the recorded curve.
    pub fn suggest(&self) -> Option<f64> {
        suggest(&self.history, self.steps)
    }

    /// Draws the smoothed loss against the LR (log x) to `path`.
    pub fn plot(&self, path: &Path) -> Result<(), PlotError> {
        plot_lines(path, "LR finder", "learning rate (log)", "smoothed loss", &[("loss", &self.history)], true)
    }
}

/// The LR where the smoothed loss falls fastest against log(LR), skipping the first
/// `planned_steps / 10` points and the last 5 as fastai does; `None` if too few points remain.
pub fn suggest(history: &[(f64, f64)], planned_steps: usize) -> Option<f64> {
    let skip = planned_steps / 10;
    let end = history.len().checked_sub(5)?;
    let pts = history.get(skip..end)?;
    pts.windows(2)
        .map(|w| ((w[1].1 - w[0].1) / (w[1].0.ln() - w[0].0.ln()), w[0].0))
        .filter(|(g, _)| g.is_finite())
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, lr)| lr)
}
