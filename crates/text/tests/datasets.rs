//! Loader counts against shared/data/README.md.

mod common;

use std::collections::BTreeMap;

use ulmfit_text::datasets::*;

fn label_counts(docs: &[Document], f: impl Fn(&str) -> String) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in docs {
        *m.entry(f(d.label.as_deref().unwrap())).or_insert(0) += 1;
    }
    m
}

#[test]
fn wikitext_and_ptb_token_counts() {
    let Some(data) = common::data_dir("wikitext_and_ptb_token_counts") else {
        return;
    };
    for (file, want) in [
        ("wikitext-2/wiki.train.tokens", 2_088_628),
        ("wikitext-2/wiki.valid.tokens", 217_646),
        ("wikitext-2/wiki.test.tokens", 245_569),
        ("ptb/ptb.train.txt", 929_589),
        ("ptb/ptb.valid.txt", 73_760),
        ("ptb/ptb.test.txt", 82_430),
    ] {
        let toks = load_lm_tokens(&data.join(file), "<eos>").unwrap();
        assert_eq!(toks.len(), want, "{file}: tokens incl. one <eos> per line");
    }
    let train = load_lm_tokens(&data.join("wikitext-2/wiki.train.tokens"), "<eos>").unwrap();
    let types: std::collections::HashSet<&String> = train.iter().collect();
    assert_eq!(types.len(), 33_278, "WikiText-2 train vocabulary incl. <eos>");
    assert_eq!(train.iter().filter(|t| *t == "<eos>").count(), 36_718, "one <eos> per line");
}

#[test]
fn trec_counts_and_latin1() {
    let Some(data) = common::data_dir("trec_counts_and_latin1") else {
        return;
    };
    let train = load_trec(&data.join("trec/train_5500.label")).unwrap();
    let test = load_trec(&data.join("trec/TREC_10.label")).unwrap();
    assert_eq!((train.len(), test.len()), (5452, 500));
    let coarse = |l: &str| trec_coarse(l).to_string();
    let want: BTreeMap<String, usize> =
        [("ABBR", 86), ("DESC", 1162), ("ENTY", 1250), ("HUM", 1223), ("LOC", 835), ("NUM", 896)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(label_counts(&train, coarse), want);
    let test_coarse: Vec<usize> = label_counts(&test, coarse).into_values().collect();
    assert_eq!(test_coarse, [9, 138, 94, 65, 81, 113]);
    let fine = label_counts(&train, |l| l.to_string()).len();
    let all_fine = label_counts(&[train.clone(), test.clone()].concat(), |l| l.to_string()).len();
    assert_eq!((fine, all_fine), (50, 50), "50 fine labels");
    assert_eq!(label_counts(&test, |l| l.to_string()).len(), 42);
    assert!(train[65].text.contains("sister\u{f0}city"), "line 66 byte 0xF0 read as Latin-1: {}", train[65].text);
}

#[test]
fn imdb_sample_fastai_csv() {
    let Some(data) = common::data_dir("imdb_sample_fastai_csv") else {
        return;
    };
    let (train, valid) = load_fastai_csv(&data.join("imdb_sample/texts.csv")).unwrap();
    assert_eq!((train.len(), valid.len()), (800, 200));
    let n = |d: &[Document], l: &str| d.iter().filter(|x| x.label.as_deref() == Some(l)).count();
    assert_eq!((n(&train, "negative"), n(&train, "positive")), (417, 383));
    assert_eq!((n(&valid, "negative"), n(&valid, "positive")), (107, 93));
    assert!(train.iter().any(|d| d.text.contains("<br />")));
}

#[test]
fn ag_news_and_sst2_generic_csv() {
    let Some(data) = common::data_dir("ag_news_and_sst2_generic_csv") else {
        return;
    };
    let mut opts = CsvOptions::csv("2", Some("0"));
    opts.header = false;
    let ag = load_csv(&data.join("ag_news/test.csv"), &opts).unwrap();
    assert_eq!(ag.len(), 7600);
    assert_eq!(label_counts(&ag, |l| l.to_string()).into_values().collect::<Vec<_>>(), [1900; 4]);
    let tsv = |f: &str| {
        let o = CsvOptions { delimiter: '\t', quoting: false, ..CsvOptions::csv("sentence", Some("label")) };
        load_csv(&data.join(f), &o).unwrap()
    };
    let (train, dev) = (tsv("sst2/train.tsv"), tsv("sst2/dev.tsv"));
    assert_eq!((train.len(), dev.len()), (67_349, 872));
    assert_eq!(label_counts(&train, |l| l.to_string()).into_values().collect::<Vec<_>>(), [29_780, 37_569]);
    assert_eq!(label_counts(&dev, |l| l.to_string()).into_values().collect::<Vec<_>>(), [428, 444]);
}

#[test]
fn imdb_full_from_tar_gz() {
    let Some(data) = common::data_dir("imdb_full_from_tar_gz") else {
        return;
    };
    let imdb = load_imdb(&data.join("imdb/aclImdb_labeled.tar.gz")).unwrap();
    assert_eq!((imdb.train.len(), imdb.test.len()), (25_000, 25_000));
    let pos = |d: &[Document]| d.iter().filter(|x| x.label.as_deref() == Some("pos")).count();
    assert_eq!((pos(&imdb.train), pos(&imdb.test)), (12_500, 12_500));
    let bytes: usize = imdb.train.iter().chain(&imdb.test).map(|d| d.text.len()).sum();
    assert_eq!(bytes, 65_483_508, "review bytes per README");
}

#[test]
fn folder_per_class_and_imdb_folder() {
    let dir = common::scratch("folders");
    for (split, label, name, text) in
        [("train", "pos", "1_9.txt", "good"), ("train", "neg", "2_1.txt", "bad"), ("test", "pos", "3_8.txt", "fine")]
    {
        let d = dir.join("aclImdb").join(split).join(label);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), text).unwrap();
    }
    std::fs::create_dir_all(dir.join("aclImdb/test/neg")).unwrap();
    let imdb = load_imdb(&dir.join("aclImdb")).unwrap();
    assert_eq!((imdb.train.len(), imdb.test.len()), (2, 1));
    assert_eq!(imdb.train[0], Document { text: "bad".into(), label: Some("neg".into()) });
    let docs = load_folder(&dir.join("aclImdb/train")).unwrap();
    assert_eq!(docs.iter().map(|d| d.label.clone().unwrap()).collect::<Vec<_>>(), ["neg", "pos"]);
}

#[test]
fn csv_blank_lines_are_skipped_outside_quotes() {
    let dir = common::scratch("blank-lines");
    let p = |n: &str| dir.join(n);
    std::fs::write(p("blank.csv"), "label,text\n\npos,\"good\n\nfilm\"\r\nneg,bad\r\n\r\n").unwrap();
    let docs = load_csv(&p("blank.csv"), &CsvOptions::csv("text", Some("label"))).unwrap();
    let want = [("good\n\nfilm", "pos"), ("bad", "neg")]
        .map(|(text, label)| Document { text: text.into(), label: Some(label.into()) });
    assert_eq!(docs, want, "blank lines skipped, the one inside quotes kept");

    std::fs::write(p("fastai.csv"), "label,text,is_valid\npos,a,False\n\nneg,b,True\n\n").unwrap();
    let (train, valid) = load_fastai_csv(&p("fastai.csv")).unwrap();
    assert_eq!((train.len(), valid.len()), (1, 1), "{train:?} {valid:?}");

    std::fs::write(p("glue.tsv"), "sentence\tlabel\r\nfine\t1\r\n\r\n").unwrap();
    let o = CsvOptions { delimiter: '\t', quoting: false, ..CsvOptions::csv("sentence", Some("label")) };
    assert_eq!(load_csv(&p("glue.tsv"), &o).unwrap().len(), 1);

    std::fs::write(p("ragged.csv"), "a,b\n\n1,2\n\n3\n").unwrap();
    let e = load_csv(&p("ragged.csv"), &CsvOptions::csv("a", None)).unwrap_err().to_string();
    assert!(e.contains("ragged.csv:5") && e.contains("1 fields"), "line numbers count blank lines: {e}");
}
