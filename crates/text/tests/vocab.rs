//! Vocabulary against fastai's `make_vocab` (fixture written by scripts/fastai_tokens.py), the
//! streaming CorpusBuilder against build + encode, and save/load round trips.

mod common;

use std::io::Read;

use ulmfit_text::vocab::unescape;
use ulmfit_text::{CorpusBuilder, Tokenizer, Vocab};

fn fixture_docs() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fastai_tokens.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("imdb_sample\t"))
        .map(|l| l.splitn(3, '\t').nth(2).unwrap().split(' ').map(|t| unescape(&t.replace("\\s", " "))).collect())
        .collect()
}

#[test]
fn vocab_matches_fastai_make_vocab() {
    let docs = fixture_docs();
    assert_eq!(docs.len(), 1000);
    let want = include_str!("fixtures/fastai_vocab_imdb_sample.txt");
    for line in want.lines() {
        let (settings, toks) = line.split_once('\t').unwrap();
        let mut s = settings.split(' ').map(|x| x.parse::<usize>().unwrap());
        let (max_vocab, min_freq) = (s.next().unwrap(), s.next().unwrap());
        let want: Vec<String> = toks.split(' ').map(|t| unescape(&t.replace("\\s", " "))).collect();
        let got = Vocab::build(&docs, max_vocab, min_freq);
        let bad = (0..want.len().max(got.len())).find(|&i| got.itos().get(i) != want.get(i));
        assert!(
            bad.is_none(),
            "max_vocab {max_vocab} min_freq {min_freq}: sizes {} vs fastai {}, first difference at {:?}: ours {:?} fastai {:?}",
            got.len(),
            want.len(),
            bad,
            bad.and_then(|i| got.itos().get(i)),
            bad.and_then(|i| want.get(i))
        );
        assert_eq!(got.len() % 8, 0);
    }
}

#[test]
fn encode_decode_and_save_load() {
    let docs = vec![vec!["xxbos", "a", "a", "a", "b\n", "b\n", "b\n", "c\\d", "c\\d", "c\\d", "rare"]];
    let v = Vocab::build(&docs, 60000, 3);
    assert_eq!(v.len(), 16, "9 special + 3 tokens padded to 16: {:?}", v.itos());
    assert_eq!((v.unk_id(), v.pad_id()), (0, 1));
    let ids = v.encode(&["a", "rare", "b\n", "xxfake", "c\\d"]);
    assert_eq!(ids, [9, 0, 10, 0, 11]);
    assert_eq!(v.decode(&ids), ["a", "xxunk", "b\n", "xxunk", "c\\d"]);
    let dir = common::scratch("vocab");
    let path = dir.join("vocab.txt");
    v.save(&path).unwrap();
    assert_eq!(Vocab::load(&path).unwrap(), v);
    std::fs::write(&path, "the\nxxunk\n").unwrap();
    let err = Vocab::load(&path).unwrap_err().to_string();
    assert!(err.contains("vocab.txt:1"), "{err}");
}

#[test]
fn corpus_builder_equals_build_then_encode() {
    let texts: Vec<String> =
        (0..300).map(|i| format!("Doc {i}: THE movie was GREAT!!! {} <br />see it", "really ".repeat(i % 5))).collect();
    let tok = Tokenizer::new();
    let toks = tok.tokenize_batch(&texts);
    let vocab = Vocab::build(&toks, 60000, 3);
    let mut b = CorpusBuilder::new(&tok);
    b.add(&texts[..100]);
    b.add(&texts[100..]);
    let (v2, corpus) = b.finish(60000, 3);
    assert_eq!(v2, vocab);
    assert_eq!(corpus.len(), texts.len());
    for (d, t) in toks.iter().enumerate() {
        assert_eq!(corpus.doc(d), vocab.encode(t).as_slice(), "document {d}");
    }
}
