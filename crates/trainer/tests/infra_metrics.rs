//! Metrics log: header once, one row per epoch in both files, resume appends, NaN survives.

use std::fs;

use ulmfit_trainer::metrics::*;

fn row(stage: &str, epoch: usize, loss: f64) -> EpochMetrics {
    EpochMetrics {
        stage: stage.into(),
        epoch,
        step: 100 * epoch as u64,
        train_loss: loss,
        valid_loss: Some(4.5),
        accuracy: None,
        perplexity: Some(90.0171313),
        lr: 1e-3,
        seconds: 12.5,
        tokens_per_s: 800.0,
    }
}

#[test]
fn rows_go_to_csv_and_jsonl_and_resume_appends() {
    let dir = std::env::temp_dir().join(format!("ulmfit-infra-metrics-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut log = MetricsLog::in_dir(&dir.join("run")).unwrap();
    log.append(&row("pretrain", 1, 5.25)).unwrap();
    // Written and flushed before the log is dropped.
    let csv = fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    assert_eq!(
        csv,
        "stage,epoch,step,train_loss,valid_loss,accuracy,perplexity,lr,seconds,tokens_per_s\n\
         pretrain,1,100,5.25,4.5,,90.0171313,0.001,12.5,800\n"
    );
    drop(log);
    // Reopening (a resumed run) appends without a second header.
    let mut log = MetricsLog::in_dir(&dir.join("run")).unwrap();
    log.append(&row("classifier,1", 2, f64::NAN)).unwrap();
    let csv = fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    assert_eq!(csv.matches("stage,epoch").count(), 1, "{csv}");
    assert!(csv.ends_with("\"classifier,1\",2,200,NaN,4.5,,90.0171313,0.001,12.5,800\n"), "{csv}");
    let rows = read_jsonl(&dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], row("pretrain", 1, 5.25));
    assert!(rows[1].train_loss.is_nan() && rows[1].stage == "classifier,1" && rows[1].accuracy.is_none());
    // Bad lines name the file and line.
    fs::write(dir.join("bad.jsonl"), "{\"stage\": 1}\n").unwrap();
    let e = read_jsonl(&dir.join("bad.jsonl")).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 1"), "{e}");
    let e = read_jsonl(&dir.join("none.jsonl")).unwrap_err().to_string();
    assert!(e.contains("none.jsonl"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}
