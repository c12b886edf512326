//! Finite-difference gradient checks for every differentiable op of ulmfit-tensor.
//!
//! For an op `f`, the scalar `L = sum(f(inputs) * W)` (W fixed and random, so no gradient
//! is trivially 1) is differentiated by autograd and by central differences,
//! `(L(x + eps) - L(x - eps)) / 2 eps`, element by element. They must agree within
//! `atol + rtol * |numeric|`. Also: broadcast shapes, frozen inputs, and gradient
//! accumulation over two backward passes.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads as the list of inputs it is

use ulmfit_tensor::{no_grad, BatchNormStats, Result, Rng, Tensor};

const EPS: f32 = 1e-2;
const ATOL: f32 = 2e-3;
const RTOL: f32 = 2e-2;

/// Checks the gradients of `f` at `inputs` (each a trainable leaf) against finite differences.
fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let out = f(inputs).unwrap();
    let weights = Rng::new(99).uniform_tensor(out.shape(), -1.0, 1.0);
    let loss_of = |xs: &[Tensor]| -> Tensor { f(xs).unwrap().mul(&weights).unwrap().sum_all().unwrap() };
    inputs.iter().for_each(Tensor::zero_grad);
    loss_of(inputs).backward().unwrap();
    for (k, x) in inputs.iter().enumerate() {
        let analytic = x.grad().unwrap_or_else(|| panic!("{name}: input {k} got no gradient")).to_vec();
        let base = x.to_vec();
        for j in 0..base.len() {
            let at = |delta: f32| {
                let mut moved = base.clone();
                moved[j] += delta;
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| if i == k { Tensor::from_vec(moved.clone(), t.shape()).unwrap() } else { t.clone() })
                    .collect();
                no_grad(|| loss_of(&xs).item().unwrap())
            };
            let numeric = (at(EPS) - at(-EPS)) / (2.0 * EPS);
            let diff = (analytic[j] - numeric).abs();
            assert!(
                diff <= ATOL + RTOL * numeric.abs(),
                "{name}: d/dinput{k}[{j}]: autograd {} vs finite difference {numeric} (diff {diff})",
                analytic[j]
            );
        }
    }
}

fn param(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::param(rng.uniform_tensor(shape, -1.0, 1.0).to_vec(), shape).unwrap()
}

/// A parameter whose entries lie in [lo, hi] (for log, div, and ops with kinks near 0).
fn param_in(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::param(rng.uniform_tensor(shape, lo, hi).to_vec(), shape).unwrap()
}

#[test]
fn elementwise_binary_with_broadcasting() {
    let mut r = Rng::new(1);
    for (sa, sb) in
        [(vec![3, 4], vec![3, 4]), (vec![3, 4], vec![4]), (vec![2, 1, 3], vec![4, 1]), (vec![1], vec![2, 3])]
    {
        let (a, b) = (param(&mut r, &sa), param(&mut r, &sb));
        check("add", &[a.clone(), b.clone()], |x| x[0].add(&x[1]));
        check("sub", &[a.clone(), b.clone()], |x| x[0].sub(&x[1]));
        check("mul", &[a.clone(), b.clone()], |x| x[0].mul(&x[1]));
        let b_pos = param_in(&mut r, &sb, 0.5, 2.0);
        check("div", &[a, b_pos], |x| x[0].div(&x[1]));
    }
}

/// The output has the broadcast shape even when the right operand brings the extra leading
/// dimensions (`[3] + [1, 1, 3]` is `[1, 1, 3]`); the gradients come back in each input's shape.
#[test]
fn elementwise_broadcast_adds_leading_dims() {
    let mut r = Rng::new(8);
    for (sa, sb, want) in [
        (vec![3], vec![1, 1, 3], vec![1, 1, 3]),
        (vec![2, 3], vec![1, 1, 3], vec![1, 2, 3]),
        (vec![1, 1, 3], vec![3], vec![1, 1, 3]),
        (vec![3], vec![2, 1, 3], vec![2, 1, 3]),
    ] {
        let (a, b) = (param(&mut r, &sa), param_in(&mut r, &sb, 0.5, 2.0));
        for (name, out) in [("add", a.add(&b)), ("sub", a.sub(&b)), ("mul", a.mul(&b)), ("div", a.div(&b))] {
            assert_eq!(out.unwrap().shape(), &want[..], "{name} {sa:?} with {sb:?}");
        }
        // Summing over axis 1 only works on (and depends on) the full broadcast shape.
        check("add then sum", &[a.clone(), b.clone()], |x| x[0].add(&x[1])?.sum(1, false));
        check("sub then sum", &[a.clone(), b.clone()], |x| x[0].sub(&x[1])?.sum(1, false));
        check("mul then sum", &[a.clone(), b.clone()], |x| x[0].mul(&x[1])?.sum(1, false));
        check("div then sum", &[a, b], |x| x[0].div(&x[1])?.sum(1, false));
    }
}

#[test]
fn elementwise_unary_and_scalar() {
    let mut r = Rng::new(2);
    let x = param(&mut r, &[3, 5]);
    check("neg", &[x.clone()], |x| Ok(x[0].neg()));
    check("exp", &[x.clone()], |x| Ok(x[0].exp()));
    check("sigmoid", &[x.clone()], |x| Ok(x[0].sigmoid()));
    check("tanh", &[x.clone()], |x| Ok(x[0].tanh()));
    check("add_scalar", &[x.clone()], |x| Ok(x[0].add_scalar(3.0)));
    check("scale", &[x.clone()], |x| Ok(x[0].scale(-2.5)));
    let pos = param_in(&mut r, &[3, 5], 0.5, 2.0);
    check("log", &[pos.clone()], |x| Ok(x[0].log()));
    check("powf", &[pos], |x| Ok(x[0].powf(1.7)));
    check("square", &[x.clone()], |x| Ok(x[0].powf(2.0)));
    // relu: keep inputs away from the kink at 0
    let away: Vec<f32> = x.to_vec().iter().map(|v| if v.abs() < 0.1 { v.signum() * 0.5 } else { *v }).collect();
    check("relu", &[Tensor::param(away, &[3, 5]).unwrap()], |x| Ok(x[0].relu()));
}

#[test]
fn matmul_all_layouts() {
    let mut r = Rng::new(3);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = param(&mut r, if ta { &[4, 3] } else { &[3, 4] });
        let b = param(&mut r, if tb { &[5, 4] } else { &[4, 5] });
        check("matmul 2-D", &[a, b], |x| x[0].matmul_t(&x[1], ta, tb));
        let a = param(&mut r, if ta { &[2, 4, 3] } else { &[2, 3, 4] });
        let b = param(&mut r, if tb { &[2, 5, 4] } else { &[2, 4, 5] });
        check("matmul batched", &[a.clone(), b], |x| x[0].matmul_t(&x[1], ta, tb));
        let shared = param(&mut r, if tb { &[5, 4] } else { &[4, 5] });
        check("matmul shared rhs", &[a, shared], |x| x[0].matmul_t(&x[1], ta, tb));
    }
    let (x, w, b) = (param(&mut r, &[2, 3, 4]), param(&mut r, &[5, 4]), param(&mut r, &[5]));
    check("linear", &[x, w, b], |x| x[0].linear(&x[1], Some(&x[2])));
}

#[test]
fn reductions_softmax_and_cross_entropy() {
    let mut r = Rng::new(4);
    let x = param(&mut r, &[3, 4, 2]);
    for axis in 0..3 {
        check("sum", &[x.clone()], |x| x[0].sum(axis, false));
        check("mean", &[x.clone()], |x| x[0].mean(axis, true));
        check("max", &[x.clone()], |x| x[0].max(axis, false)); // distinct random values: no ties
        check("softmax", &[x.clone()], |x| x[0].softmax(axis));
        check("log_softmax", &[x.clone()], |x| x[0].log_softmax(axis));
    }
    check("sum_all", &[x.clone()], |x| x[0].sum_all());
    let logits = param_in(&mut r, &[5, 4], -3.0, 3.0);
    check("cross_entropy", &[logits.clone()], |x| x[0].cross_entropy(&[0, 3, 1, 1, 2], None));
    check("cross_entropy ignore", &[logits], |x| x[0].cross_entropy(&[0, 9, 1, 9, 2], Some(9)));
    let (x, w, b) = (param(&mut r, &[5, 3]), param(&mut r, &[4, 3]), param(&mut r, &[4]));
    check("linear_cross_entropy", &[x.clone(), w.clone(), b], |x| {
        x[0].linear_cross_entropy(&x[1], Some(&x[2]), &[0, 9, 3, 1, 2], Some(9))
    });
    check("linear_cross_entropy no bias", &[x, w], |x| x[0].linear_cross_entropy(&x[1], None, &[0, 2, 3, 1, 2], None));
}

#[test]
fn embedding_dropout_and_layout_ops() {
    let mut r = Rng::new(5);
    let table = param(&mut r, &[6, 3]);
    check("embedding", &[table.clone()], |x| x[0].embedding(&[4, 1, 4, 0, 5]));
    // Embedding dropout: a [V, 1] mask on the table drops whole words.
    let word_mask = r.dropout_mask(&[6, 1], 0.5);
    check("embedding dropout", &[table], |x| x[0].mul(&word_mask)?.embedding(&[4, 1, 4, 0]));
    // Variational dropout: a [1, B, H] mask shared over the time axis of [T, B, H].
    let x = param(&mut r, &[4, 2, 3]);
    let mask = r.dropout_mask(&[1, 2, 3], 0.3);
    check("variational dropout", &[x.clone()], |x| x[0].mul(&mask));
    check("reshape", &[x.clone()], |x| x[0].reshape(&[8, 3]));
    check("transpose", &[x.clone()], |x| x[0].transpose(0, 2));
    check("narrow", &[x.clone()], |x| x[0].narrow(1, 1, 1));
    let y = param(&mut r, &[4, 1, 3]);
    check("concat", &[x, y], |x| Tensor::concat(&[&x[0], &x[1]], 1));
}

#[test]
fn batch_norm_train_and_eval() {
    let mut r = Rng::new(6);
    let (x, g, b) = (param(&mut r, &[5, 3]), param_in(&mut r, &[3], 0.5, 1.5), param(&mut r, &[3]));
    // Fresh statistics per call so repeated forwards see the same state.
    check("batch_norm train", &[x.clone(), g.clone(), b.clone()], |x| {
        x[0].batch_norm_1d(&x[1], &x[2], &BatchNormStats::new(3), true)
    });
    let stats = BatchNormStats::new(3);
    stats.mean.data_mut().copy_from_slice(&[0.1, -0.2, 0.3]);
    stats.var.data_mut().copy_from_slice(&[0.5, 2.0, 1.0]);
    check("batch_norm eval", &[x, g, b], |x| x[0].batch_norm_1d(&x[1], &x[2], &stats, false));
}

#[test]
fn frozen_inputs_get_no_gradient_and_grads_accumulate() {
    let mut r = Rng::new(7);
    let (a, b) = (param(&mut r, &[2, 3]), param(&mut r, &[3, 2]));
    b.set_requires_grad(false).unwrap();
    let loss = || a.matmul(&b).unwrap().tanh().sum_all().unwrap();
    loss().backward().unwrap();
    assert!(b.grad().is_none(), "a frozen parameter must not receive a gradient");
    let once = a.grad().unwrap().to_vec();
    loss().backward().unwrap();
    let twice = a.grad().unwrap().to_vec();
    for (o, t) in once.iter().zip(&twice) {
        assert!((2.0 * o - t).abs() <= 1e-6 * (1.0 + t.abs()), "accumulation: {t} != 2 * {o}");
    }
    // Unfreezing lets gradients through again; no_grad records nothing.
    b.set_requires_grad(true).unwrap();
    loss().backward().unwrap();
    assert!(b.grad().is_some());
    assert!(!no_grad(|| a.matmul(&b).unwrap()).requires_grad());
    // detach cuts the graph.
    assert!(!a.tanh().detach().requires_grad());
}
