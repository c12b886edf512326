//! Bad input gives clear errors naming file and line; random bytes never panic the tokenizer
//! or the loaders (fuzz-style, seeded).

mod common;

use std::path::Path;

use ulmfit_text::datasets::*;
use ulmfit_text::rng::Rng;
use ulmfit_text::{Tokenizer, Vocab};

fn err_of<T: std::fmt::Debug>(r: ulmfit_text::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn clear_errors_for_bad_files() {
    let dir = common::scratch("bad");
    let p = |n: &str| dir.join(n);

    let e = err_of(load_trec(&p("missing.label")));
    assert!(e.contains("missing.label") && e.contains("No such file"), "{e}");

    std::fs::write(p("cols.csv"), "label,review\npos,great\n").unwrap();
    let e = err_of(load_csv(&p("cols.csv"), &CsvOptions::csv("text", Some("label"))));
    assert!(e.contains("cols.csv") && e.contains("\"text\"") && e.contains("label, review"), "{e}");

    std::fs::write(p("nolabel.csv"), "label,text\npos,good\n,bad\n").unwrap();
    let e = err_of(load_csv(&p("nolabel.csv"), &CsvOptions::csv("text", Some("label"))));
    assert!(e.contains("nolabel.csv:3") && e.contains("empty label"), "{e}");

    std::fs::write(p("empty.csv"), "label,text,is_valid\n").unwrap();
    let e = err_of(load_fastai_csv(&p("empty.csv")));
    assert!(e.contains("empty.csv") && e.contains("empty dataset"), "{e}");
    std::fs::write(p("empty.label"), "\n\n").unwrap();
    assert!(err_of(load_trec(&p("empty.label"))).contains("empty dataset"));
    std::fs::create_dir_all(p("nofolders")).unwrap();
    assert!(err_of(load_folder(&p("nofolders"))).contains("empty dataset"));

    std::fs::write(p("utf8.csv"), b"label,text\npos,fine\nneg,bad \xff byte\n".as_slice()).unwrap();
    let e = err_of(load_csv(&p("utf8.csv"), &CsvOptions::csv("text", Some("label"))));
    assert!(e.contains("utf8.csv:3") && e.contains("invalid UTF-8"), "{e}");

    std::fs::write(p("ragged.csv"), "a,b\n1,2\n3\n").unwrap();
    let e = err_of(load_csv(&p("ragged.csv"), &CsvOptions::csv("a", None)));
    assert!(e.contains("ragged.csv:3") && e.contains("1 fields"), "{e}");

    std::fs::write(p("valid.csv"), "label,text,is_valid\npos,x,maybe\n").unwrap();
    let e = err_of(load_fastai_csv(&p("valid.csv")));
    assert!(e.contains("valid.csv:2") && e.contains("maybe"), "{e}");

    std::fs::write(p("nolabel.label"), "What is this ?\n").unwrap();
    let e = err_of(load_trec(&p("nolabel.label")));
    assert!(e.contains("nolabel.label:1") && e.contains("COARSE:fine"), "{e}");

    std::fs::write(p("notgz.tar.gz"), "plain text").unwrap();
    assert!(err_of(load_imdb(&p("notgz.tar.gz"))).contains("notgz.tar.gz"));
}

fn random_bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    const PIECES: [&str; 24] = [
        " ",
        "\n",
        ",",
        "\"",
        "'",
        "<br />",
        "&amp;",
        "&#",
        "...",
        "!!!!",
        "n't",
        "http://a.b/c",
        "É",
        "—",
        "😀",
        "\t",
        "A",
        "the the the",
        "xxbos",
        "\\",
        "#",
        "(",
        "10km",
        "'s",
    ];
    let n = rng.below(max + 1);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        if rng.below(3) == 0 {
            v.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
        } else {
            v.push(rng.next_u64() as u8);
        }
    }
    v
}

#[test]
fn random_bytes_never_panic() {
    let tok = Tokenizer::new();
    let mut rng = Rng::new(12345);
    for _ in 0..3000 {
        let text = String::from_utf8_lossy(&random_bytes(&mut rng, 200)).into_owned();
        let toks = tok.tokenize(&text);
        assert_eq!(toks[0], "xxbos", "tokens of {text:?}");
        assert!(toks.iter().all(|t| !t.is_empty() && !t.contains(' ')), "{text:?} -> {toks:?}");
    }
    let dir = common::scratch("fuzz");
    let f = dir.join("f");
    for i in 0..300 {
        std::fs::write(&f, random_bytes(&mut rng, 300)).unwrap();
        let _ = load_trec(&f);
        let _ = load_csv(&f, &CsvOptions::csv("0", Some("1")));
        let _ = load_csv(&f, &CsvOptions { header: false, delimiter: '\t', ..CsvOptions::csv("0", None) });
        let _ = load_fastai_csv(&f);
        let _ = load_lm_tokens(&f, "<eos>");
        let _ = Vocab::load(&f);
        let gz = dir.join(format!("f{}.tar.gz", i % 2));
        std::fs::write(&gz, random_bytes(&mut rng, 300)).unwrap();
        let _ = load_imdb(&gz);
    }
    let _ = load_imdb(Path::new("/nonexistent/aclImdb"));
}
