//! Progress: one plain line per 10% when not on a terminal, and the line format.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ulmfit_trainer::progress::*;

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn lines_mode_prints_every_tenth() {
    let out = Shared::default();
    let mut p = EpochProgress::with_mode("pretrain 1/3", 95, ProgressMode::Lines(Box::new(out.clone())));
    for _ in 0..95 {
        p.update(2.0, 64 * 70);
    }
    // Constant loss: the bias-corrected EMA is exactly the loss.
    assert!((p.smoothed_loss() - 2.0).abs() < 1e-9, "{}", p.smoothed_loss());
    let (secs, tps) = p.finish();
    assert!(secs >= 0.0 && tps > 0.0);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert!(lines[0].starts_with("pretrain 1/3  10% 10/95 loss 2.0000 "), "{text}");
    assert!(lines[9].starts_with("pretrain 1/3 100% 95/95 loss 2.0000 ") && lines[9].ends_with("eta 0s"), "{text}");
    // Fewer batches than tenths: one line per batch, never more.
    let out = Shared::default();
    let mut p = EpochProgress::with_mode("x", 3, ProgressMode::Lines(Box::new(out.clone())));
    (0..3).for_each(|_| p.update(1.0, 1));
    assert_eq!(String::from_utf8(out.0.lock().unwrap().clone()).unwrap().lines().count(), 3);
    let mut hidden = EpochProgress::with_mode("h", 2, ProgressMode::Hidden);
    hidden.update(1.0, 1);
    assert!(hidden.smoothed_loss().is_finite());
}

#[test]
fn status_line_format() {
    let l = status_line("clas", 150, 500, 4.12345, 812.4, Duration::from_secs(62));
    // eta = 62 s * 350 / 150 = 144.67 s = 2m24s.
    assert_eq!(l, "clas  30% 150/500 loss 4.1235 812 tok/s elapsed 1m02s eta 2m24s");
    assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
    assert_eq!(format_duration(Duration::from_secs(7)), "7s");
}
