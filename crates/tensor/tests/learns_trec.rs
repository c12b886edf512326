//! End-to-end check that the engine learns: a bag-of-embeddings classifier trained with
//! Adam on TREC-6 coarse labels (real questions from `$ULMFIT_DATA/trec`) must beat the
//! majority class on the 500 test questions by at least 30 accuracy points.
//!
//! Model: mean of word embeddings (E = 32) -> linear 32x64 -> relu -> linear 64x6, cross-
//! entropy. The mean over each question's words is a matmul with a [B, words] averaging
//! matrix, so the test touches embedding, matmul, linear, relu, cross_entropy, Adam.

use std::collections::HashMap;
use std::path::PathBuf;
use ulmfit_tensor::optim::{Adam, ParamGroup};
use ulmfit_tensor::{no_grad, Rng, Tensor};

/// Margin over the majority class that the test asserts, in accuracy points.
const MARGIN: f32 = 0.30;

fn data_dir() -> PathBuf {
    std::env::var_os("ULMFIT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")))
}

/// (coarse label, lowercased words) per line. The files are Latin-1: each byte is a char.
fn read_trec(path: &PathBuf) -> Vec<(String, Vec<String>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text: String = bytes.iter().map(|&b| b as char).collect();
    text.lines()
        .filter_map(|line| {
            let (label, question) = line.split_once(' ')?;
            let coarse = label.split(':').next()?.to_string();
            Some((coarse, question.split_whitespace().map(str::to_lowercase).collect()))
        })
        .collect()
}

struct Batch {
    ids: Vec<u32>,
    /// [B, ids.len()]: row b averages the embeddings of example b's words.
    averaging: Tensor,
    labels: Vec<u32>,
}

fn batch(examples: &[&(Vec<u32>, u32)]) -> Batch {
    let total: usize = examples.iter().map(|e| e.0.len()).sum();
    let mut avg = vec![0.0; examples.len() * total];
    let mut ids = Vec::with_capacity(total);
    for (b, (words, _)) in examples.iter().enumerate() {
        for &w in words {
            avg[b * total + ids.len()] = 1.0 / words.len() as f32;
            ids.push(w);
        }
    }
    Batch {
        ids,
        averaging: Tensor::from_vec(avg, &[examples.len(), total]).unwrap(),
        labels: examples.iter().map(|e| e.1).collect(),
    }
}

#[test]
fn bag_of_embeddings_beats_majority_on_trec6() {
    let dir = data_dir().join("trec");
    if !dir.exists() {
        println!("skip: no TREC data at {} (set ULMFIT_DATA)", dir.display());
        return;
    }
    let (train, test) = (read_trec(&dir.join("train_5500.label")), read_trec(&dir.join("TREC_10.label")));
    assert_eq!((train.len(), test.len()), (5452, 500));
    let classes = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"];
    let mut vocab: HashMap<&str, u32> = HashMap::from([("<unk>", 0)]);
    for (_, words) in &train {
        for w in words {
            let next = vocab.len() as u32;
            vocab.entry(w).or_insert(next);
        }
    }
    let encode = |set: &[(String, Vec<String>)]| -> Vec<(Vec<u32>, u32)> {
        set.iter()
            .map(|(l, ws)| {
                (
                    ws.iter().map(|w| *vocab.get(w.as_str()).unwrap_or(&0)).collect(),
                    classes.iter().position(|c| c == l).unwrap() as u32,
                )
            })
            .collect()
    };
    let (train, test) = (encode(&train), encode(&test));

    let mut rng = Rng::new(0);
    let (v, e, h, c) = (vocab.len(), 32, 64, classes.len());
    let param = |t: Tensor| Tensor::param(t.to_vec(), t.shape()).unwrap();
    let emb = param(rng.normal_tensor(&[v, e], 0.1));
    let w1 = param(rng.uniform_tensor(&[h, e], -(1.0 / e as f32).sqrt(), (1.0 / e as f32).sqrt()));
    let b1 = param(Tensor::zeros(&[h]));
    let w2 = param(rng.uniform_tensor(&[c, h], -(1.0 / h as f32).sqrt(), (1.0 / h as f32).sqrt()));
    let b2 = param(Tensor::zeros(&[c]));
    let forward = |b: &Batch| -> Tensor {
        let x = b.averaging.matmul(&emb.embedding(&b.ids).unwrap()).unwrap();
        x.linear(&w1, Some(&b1)).unwrap().relu().linear(&w2, Some(&b2)).unwrap()
    };
    let mut opt =
        Adam::new(vec![ParamGroup::new(vec![emb.clone(), w1.clone(), b1.clone(), w2.clone(), b2.clone()], 3e-3)], 1e-8);

    let mut order: Vec<usize> = (0..train.len()).collect();
    for _epoch in 0..8 {
        rng.shuffle(&mut order);
        for chunk in order.chunks(32) {
            let b = batch(&chunk.iter().map(|&i| &train[i]).collect::<Vec<_>>());
            let loss = forward(&b).cross_entropy(&b.labels, None).unwrap();
            opt.zero_grad();
            loss.backward().unwrap();
            opt.step();
        }
    }

    let test_batch = batch(&test.iter().collect::<Vec<_>>());
    let logits = no_grad(|| forward(&test_batch)).to_vec();
    let correct = logits.chunks(c).zip(&test_batch.labels).filter(|(row, &y)| {
        let pred = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        pred as u32 == y
    });
    let accuracy = correct.count() as f32 / test.len() as f32;
    let majority =
        (0..c as u32).map(|k| test.iter().filter(|e| e.1 == k).count()).max().unwrap() as f32 / test.len() as f32;
    println!("TREC-6 test accuracy {:.1}% vs majority class {:.1}%", 100.0 * accuracy, 100.0 * majority);
    assert!(accuracy >= majority + MARGIN, "accuracy {accuracy} does not beat majority {majority} by {MARGIN}");
}
