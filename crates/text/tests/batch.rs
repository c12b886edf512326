//! LM stream and classifier batches against plain references (concatenate-and-slice; fastai's
//! SortedDL ordering and pad_chunk layout).

use ulmfit_text::batch::sorted_order;
use ulmfit_text::rng::Rng;
use ulmfit_text::{Bptt, ClassifierBatches, Corpus, LmStream};

fn corpus(n_docs: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    let docs: Vec<Vec<u32>> =
        (0..n_docs).map(|d| (0..rng.below(40)).map(|k| (d * 1000 + k) as u32).collect()).collect();
    Corpus::from_docs(&docs)
}

/// Reference: concatenate in `order`, cut into B rows of (N-1)/B, slice by T.
fn reference(c: &Corpus, order: &[u32], bs: usize, lens: &[usize]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let stream: Vec<u32> = order.iter().flat_map(|&d| c.doc(d as usize).to_vec()).collect();
    let row = (stream.len() - 1) / bs;
    let mut t = 0;
    let mut out = Vec::new();
    for &l in lens {
        let (mut x, mut y) = (vec![0; l * bs], vec![0; l * bs]);
        for s in 0..l {
            for b in 0..bs {
                x[s * bs + b] = stream[b * row + t + s];
                y[s * bs + b] = stream[b * row + t + s + 1];
            }
        }
        out.push((x, y));
        t += l;
    }
    assert_eq!(t, row, "reference consumed the rows");
    out
}

#[test]
fn lm_stream_matches_concatenate_and_slice() {
    let c = corpus(200, 1);
    for (bs, bptt, shuffle) in [(4, Bptt::Fixed(7), false), (8, Bptt::Fixed(10), true), (3, Bptt::Random(12), true)] {
        for epoch in 0..2 {
            let stream = LmStream::new(&c, bs, bptt, shuffle, 42, epoch).unwrap();
            let order = stream.doc_order().to_vec();
            if !shuffle {
                assert!(order.windows(2).all(|w| w[0] < w[1]), "unshuffled order");
            }
            let batches: Vec<_> = stream.collect();
            let lens: Vec<usize> = batches.iter().map(|b| b.seq_len).collect();
            let want = reference(&c, &order, bs, &lens);
            for (i, (b, (x, y))) in batches.iter().zip(&want).enumerate() {
                assert_eq!(b.batch_size, bs);
                let bad = (0..x.len()).find(|&k| b.x[k] != x[k] || b.y[k] != y[k]);
                assert!(bad.is_none(), "{bptt:?} epoch {epoch} batch {i}: first bad index {bad:?}");
            }
            if let Bptt::Random(base) = bptt {
                let body = &lens[..lens.len() - 1];
                assert!(body.iter().all(|&l| l >= 5), "random bptt lengths {lens:?}");
                let mean = body.iter().sum::<usize>() as f64 / body.len() as f64;
                assert!((mean - base as f64).abs() < 3.0, "random bptt mean {mean}");
            }
        }
    }
    let a = LmStream::new(&c, 4, Bptt::Fixed(5), true, 7, 0).unwrap().doc_order().to_vec();
    let b = LmStream::new(&c, 4, Bptt::Fixed(5), true, 7, 1).unwrap().doc_order().to_vec();
    let a2 = LmStream::new(&c, 4, Bptt::Fixed(5), true, 7, 0).unwrap().doc_order().to_vec();
    assert!(a != b && a == a2, "epochs reshuffle, same seed+epoch repeats");
}

#[test]
fn classifier_batches_sorted_and_front_padded() {
    let c = corpus(500, 2);
    let labels: Vec<u32> = (0..500).map(|d| (d % 3) as u32).collect();
    let lens: Vec<usize> = (0..c.len()).map(|d| c.doc_len(d)).collect();
    let fixed = sorted_order(&lens, 8, false, &mut Rng::new(0));
    assert!(fixed.windows(2).all(|w| lens[w[0]] >= lens[w[1]]), "unshuffled: longest first");
    let mut seen = vec![0; c.len()];
    let batches: Vec<_> = ClassifierBatches::new(&c, &labels, 8, 5, true, 3, 0).unwrap().collect();
    let longest = *lens.iter().max().unwrap();
    assert_eq!(batches[0].lengths[0], longest, "fastai puts the longest document first");
    for (i, b) in batches.iter().enumerate() {
        let bs = b.docs.len();
        assert!(b.lengths.windows(2).all(|w| w[0] >= w[1]), "batch {i} sorted within its chunk");
        for (k, &d) in b.docs.iter().enumerate() {
            seen[d] += 1;
            assert_eq!(b.labels[k], labels[d]);
            let pad = b.seq_len - lens[d];
            let front = pad / 5 * 5;
            let col: Vec<u32> = (0..b.seq_len).map(|t| b.x[t * bs + k]).collect();
            assert!(col[..front].iter().all(|&p| p == 1), "batch {i} ex {k}: front padding");
            assert_eq!(&col[front..front + lens[d]], c.doc(d), "batch {i} ex {k}: document after the pad chunks");
            assert!(col[front + lens[d]..].iter().all(|&p| p == 1), "batch {i} ex {k}: remainder padding");
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "every document exactly once");
}

#[test]
fn too_small_or_mismatched_inputs_are_errors() {
    let tiny = Corpus::from_docs(&[vec![1, 2, 3]]);
    let e = LmStream::new(&tiny, 4, Bptt::Fixed(5), true, 0, 0).err().expect("3 tokens for 4 rows");
    assert!(e.to_string().contains("3 tokens cannot fill batch size 4"), "{e}");
    let e = ClassifierBatches::new(&tiny, &[0, 1], 2, 72, false, 0, 0).err().expect("2 labels for 1 doc");
    assert!(e.to_string().contains("1 documents, 2 labels"), "{e}");
    assert!(ClassifierBatches::new(&Corpus::default(), &[], 2, 72, false, 0, 0).is_err());
}
