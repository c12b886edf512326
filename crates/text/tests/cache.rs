//! Token-id cache: round trip, hit on the second run, miss after the input or settings change,
//! clear errors on corrupt files.

mod common;

use ulmfit_text::cache::{cache_key, load_ids, load_or_build, save_ids};
use ulmfit_text::{Corpus, CorpusBuilder, Tokenizer};

#[test]
fn cache_round_trip_hit_and_invalidation() {
    let dir = common::scratch("cache");
    let input = dir.join("docs.txt");
    std::fs::write(&input, "The movie was great.\nI hated it!!!\nThe end.\n").unwrap();
    let tok = Tokenizer::new();
    let build = |path: &std::path::Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut b = CorpusBuilder::new(&tok);
        b.add(&lines);
        Ok(b.finish(60000, 1))
    };
    let key = cache_key(&[&input], "max_vocab=60000 min_freq=1").unwrap();
    let (v1, c1, hit1) = load_or_build(&dir, &key, || build(&input)).unwrap();
    let (v2, c2, hit2) = load_or_build(&dir, &key, || panic!("second run must hit the cache")).unwrap();
    assert!(!hit1 && hit2);
    assert_eq!((v1, c1.clone()), (v2, c2));
    assert_eq!(c1.len(), 3);
    assert_ne!(key, cache_key(&[&input], "max_vocab=60000 min_freq=3").unwrap(), "settings in key");
    std::fs::write(&input, "Changed, and longer than before.\n").unwrap();
    assert_ne!(key, cache_key(&[&input], "max_vocab=60000 min_freq=1").unwrap(), "input size/mtime in key");

    let flat = dir.join("x.ids");
    let c = Corpus::from_docs(&[vec![5, 6, 7], vec![], vec![8]]);
    save_ids(&flat, &c).unwrap();
    assert_eq!(load_ids(&flat).unwrap(), c);
    std::fs::write(&flat, [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]).unwrap();
    let err = load_ids(&flat).unwrap_err().to_string();
    assert!(err.contains("x.ids") && err.contains("not a token-id cache"), "{err}");
}
