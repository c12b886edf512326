//! `download` against a tiny HTTP server on 127.0.0.1 serving shared/data: every file arrives
//! with the right checksum, a second run skips them, a corrupted or missing file is an error.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use ulmfit_text::download::{download, Outcome, FILES};
use ulmfit_text::TextError;

/// Serves `root` over HTTP/1.1 (one request per connection). Paths under `/corrupt/` are served
/// with their first byte changed. Returns the base URL.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line != "\r\n" && !line.is_empty() {
                line.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let (corrupt, rel) = match path.strip_prefix("corrupt/") {
                Some(rest) => (true, rest.to_string()),
                None => (false, path),
            };
            let reply = match std::fs::read(root.join(&rel)) {
                Ok(mut body) if !rel.contains("..") => {
                    if corrupt && !body.is_empty() {
                        body[0] ^= 1;
                    }
                    let mut r =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                            .into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

#[test]
fn downloads_all_datasets_from_loopback_mirror() {
    let Some(data) = common::data_dir("downloads_all_datasets_from_loopback_mirror") else {
        return;
    };
    let base = serve(data.clone());
    let dest = common::scratch("download");
    let mut calls = 0;
    let got = download(&dest, Some(&base), None, &mut |_, _, _| calls += 1).unwrap();
    assert_eq!(got.len(), FILES.len());
    for (f, o) in FILES.iter().zip(&got) {
        assert_eq!(o, &Outcome::Downloaded(dest.join(f.mirror_path)));
        let (a, b) =
            (std::fs::read(dest.join(f.mirror_path)).unwrap(), std::fs::read(data.join(f.mirror_path)).unwrap());
        assert!(a == b, "{} differs from the served file", f.mirror_path);
    }
    assert!(calls >= FILES.len(), "progress reported");
    let again = download(&dest, Some(&base), Some("trec"), &mut |_, _, _| {}).unwrap();
    assert!(again.iter().all(|o| matches!(o, Outcome::Present(_))), "second run skips verified files: {again:?}");

    let bad = common::scratch("download-bad");
    let e = download(&bad, Some(&format!("{base}/corrupt")), Some("trec"), &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch") && e.contains("train_5500.label"), "{e}");
    assert!(!bad.join("trec/train_5500.label").exists(), "a bad download is not kept");
    let e =
        download(&bad, Some(&format!("{base}/nothing-here")), Some("ptb"), &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("ptb.train.txt"), "{e}");
    let e = download(&bad, Some(&base), Some("mnist"), &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("unknown dataset") && e.contains("wikitext-2"), "{e}");
}

#[test]
fn unknown_dataset_is_named_with_the_known_ones() {
    let dest = common::scratch("download-unknown");
    let err = download(&dest, None, Some("mnist"), &mut |_, _, _| {}).unwrap_err();
    assert!(matches!(err, TextError::Invalid(_)), "an argument error, not a failed download: {err:?}");
    let e = err.to_string();
    assert!(e.starts_with("unknown dataset \"mnist\""), "{e}");
    for name in ["wikitext-2", "ptb", "trec", "imdb", "imdb_sample", "ag_news", "sst2"] {
        assert!(e.contains(name), "{e} lists {name}");
    }
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "nothing written");
}
