//! SVG charts (ticks, point placement, broken lines) and the LR finder against fastai's formulas.

use ulmfit_trainer::plot::*;

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn ticks_are_round_and_cover_the_range() {
    assert_close(&linear_ticks(0.0, 1.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "0..1");
    assert_close(&linear_ticks(3.7, 9.2), &[4.0, 5.0, 6.0, 7.0, 8.0, 9.0], "3.7..9.2");
    assert_close(&linear_ticks(-30.0, 30.0), &[-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0], "-30..30");
    assert_close(&log_ticks(1e-7, 10.0), &[1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], "log 1e-7..10");
    assert_close(&log_ticks(2e-3, 0.5), &[1e-2, 1e-1], "log 2e-3..0.5");
}

#[test]
fn svg_places_points_and_breaks_lines_at_nan() {
    // x in [0, 10], y in [0, 2]: plot area x 80..570 (width 490), y 40..380 (height 340).
    let a = [(0.0, 0.0), (5.0, 1.0), (10.0, 2.0)];
    let b = [(0.0, 2.0), (2.0, f64::NAN), (4.0, 1.5), (6.0, 1.0)];
    let svg = render_svg("loss <train>", "epoch", "loss", &[("train", &a), ("valid", &b)], false);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(r#"points="80.00,380.00 325.00,210.00 570.00,40.00""#), "{svg}");
    // The NaN splits "valid" into a one-point run and a two-point run.
    assert!(
        svg.contains(r#"points="80.00,40.00""#) && svg.contains(r#"points="276.00,125.00 374.00,210.00""#),
        "{svg}"
    );
    assert!(svg.contains("loss &lt;train&gt;") && svg.contains(">valid</text>") && svg.contains(">epoch</text>"));
    // Log x: 1e-6 .. 1e-2 over 490 px, 1e-4 in the middle; x <= 0 is skipped.
    let lr = [(0.0, 1.0), (1e-6, 1.0), (1e-4, 2.0), (1e-2, 3.0)];
    let svg = render_svg("lr", "lr", "loss", &[("loss", &lr)], true);
    assert!(svg.contains(r#"points="80.00,380.00 325.00,210.00 570.00,40.00""#), "{svg}");
    assert!(svg.contains(">1e-6</text>") && svg.contains(">0.01</text>"), "{svg}");
    // Degenerate input still gives a valid document.
    let empty = render_svg("none", "x", "y", &[("nothing", &[])], true);
    assert!(empty.contains("</svg>") && !empty.contains("NaN"));
    let dir = std::env::temp_dir().join(format!("ulmfit-infra-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    plot_lines(&dir.join("a.svg"), "t", "x", "y", &[("a", &a)], false).unwrap();
    assert!(std::fs::read_to_string(dir.join("a.svg")).unwrap().contains("polyline"));
    let e = plot_lines(&dir.join("missing/a.svg"), "t", "x", "y", &[("a", &a)], false).unwrap_err().to_string();
    assert!(e.contains("missing/a.svg"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lr_finder_schedule_smoothing_and_stop() {
    let f = LrFinder::default();
    // start * (end/start)^(i/steps): 1e-7 at 0, 1e-7 * 1e8^0.5 = 1e-3 at 50, 10 at 100.
    assert_close(&[f.lr(0), f.lr(50), f.lr(100)], &[1e-7, 1e-3, 10.0], "lr");
    let mut f = LrFinder::new(1e-3, 1.0, 10);
    // AvgSmoothLoss: val = 0.98 val + 0.02 loss; smooth = val / (1 - 0.98^n).
    assert_eq!(f.record(2.0), LrFindStep::Continue);
    assert_eq!(f.record(1.0), LrFindStep::Continue);
    let v2 = 0.98 * 0.02 * 2.0 + 0.02 * 1.0;
    assert_close(&[f.history[0].1, f.history[1].1], &[2.0, v2 / (1.0 - 0.98f64.powi(2))], "smoothed");
    assert_close(&[f.history[1].0], &[1e-3 * 1000f64.powf(0.1)], "recorded lr");
    // A huge loss pushes the smoothed loss above 4x the best: stop.
    assert_eq!(f.record(1000.0), LrFindStep::Diverged);
    let mut g = LrFinder::new(1e-3, 1.0, 3);
    assert_eq!(g.record(1.0), LrFindStep::Continue);
    assert_eq!(g.record(f64::NAN), LrFindStep::Diverged);
    let mut h = LrFinder::new(1e-3, 1.0, 2);
    h.record(1.0);
    assert_eq!(h.record(1.0), LrFindStep::Done);
}

#[test]
fn suggestion_is_the_steepest_descent() {
    // Smoothed loss flat, then falling fastest between lr 1e-3 and 1e-2.5, then rising.
    let lrs: Vec<f64> = (0..40).map(|i| 1e-6 * 10f64.powf(i as f64 / 8.0)).collect();
    let loss = |lr: f64| {
        let x = lr.log10();
        if x < -3.0 {
            3.0
        } else if x < -2.5 {
            3.0 - 2.0 * (x + 3.0)
        } else {
            2.0 + (x + 2.5) * 0.5
        }
    };
    let hist: Vec<(f64, f64)> = lrs.iter().map(|&lr| (lr, loss(lr))).collect();
    let s = suggest(&hist, 40).unwrap();
    assert!((1e-3 * 0.99..1e-2 / 3.0).contains(&s), "suggested {s}");
    // Too short a curve gives no suggestion.
    assert_eq!(suggest(&hist[..6], 100), None);
}
