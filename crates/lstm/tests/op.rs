//! The fused layer as one autograd op against the same LSTM composed from `ulmfit_tensor`
//! autograd ops (matmul, narrow, sigmoid, tanh, mul, add, concat): y and every gradient.

mod common;

use common::{assert_close, Case};
use ulmfit_lstm::{op, DropMask};
use ulmfit_tensor::{Result, Tensor};

/// The inputs of one layer as trainable leaves: x, w_ih, w_hh, b_ih, b_hh, h0, c0.
fn leaves(cs: &Case) -> Vec<Tensor> {
    let (t, b, i, h) = (cs.d.t, cs.d.b, cs.d.i, cs.d.h);
    let data = [
        (&cs.x, vec![t, b, i]),
        (&cs.w_ih, vec![4 * h, i]),
        (&cs.w_hh, vec![4 * h, h]),
        (&cs.b_ih, vec![4 * h]),
        (&cs.b_hh, vec![4 * h]),
        (&cs.h0, vec![b, h]),
        (&cs.c0, vec![b, h]),
    ];
    data.into_iter().map(|(v, s)| Tensor::param(v.clone(), &s).expect("shape fits")).collect()
}

/// The LSTM step by step from autograd ops (gate order i, f, g, o), W_hh multiplied by `mask`.
fn composed(p: &[Tensor], mask: Option<&Tensor>) -> Result<Tensor> {
    let [x, w_ih, w_hh, b_ih, b_hh, h0, c0] = p else { unreachable!("seven leaves") };
    let (tn, bn, inp, hn) = (x.dim(0), x.dim(1), x.dim(2), h0.dim(1));
    let w_hh = match mask {
        Some(m) => w_hh.mul(m)?,
        None => w_hh.clone(),
    };
    let (mut h, mut c) = (h0.clone(), c0.clone());
    let mut ys = Vec::new();
    for t in 0..tn {
        let xt = x.narrow(0, t, 1)?.reshape(&[bn, inp])?;
        let z = xt.matmul_t(w_ih, false, true)?.add(&h.matmul_t(&w_hh, false, true)?)?.add(b_ih)?.add(b_hh)?;
        let gate = |k: usize| z.narrow(1, k * hn, hn);
        let (i, f, g, o) = (gate(0)?.sigmoid(), gate(1)?.sigmoid(), gate(2)?.tanh(), gate(3)?.sigmoid());
        c = f.mul(&c)?.add(&i.mul(&g)?)?;
        h = o.mul(&c.tanh())?;
        ys.push(h.reshape(&[1, bn, hn])?);
    }
    Tensor::concat(&ys.iter().collect::<Vec<_>>(), 0)
}

/// Runs both versions with loss sum(y * dy) and compares y and the seven gradients; the
/// leaves at `frozen` need no gradient (gradual unfreezing) and must get none.
fn check(cs: &Case, drop: Option<DropMask>, frozen: &[usize]) -> Result<()> {
    let what = format!("{:?} drop {drop:?} frozen {frozen:?}", cs.d);
    let leaves = |cs: &Case| -> Result<Vec<Tensor>> {
        let p = leaves(cs);
        for &k in frozen {
            p[k].set_requires_grad(false)?;
        }
        Ok(p)
    };
    let dy = Tensor::from_vec(cs.dy.clone(), &[cs.d.t, cs.d.b, cs.d.h])?;
    let mask = drop.map(|m| {
        let mut scale = Vec::new();
        m.apply(&vec![1.0; cs.w_hh.len()], &mut scale);
        Tensor::from_vec(scale, &[4 * cs.d.h, cs.d.h]).expect("w_hh shape")
    });
    let want_p = leaves(cs)?;
    let want_y = composed(&want_p, mask.as_ref())?;
    want_y.mul(&dy)?.sum_all()?.backward()?;
    let got_p = leaves(cs)?;
    let [x, w_ih, w_hh, b_ih, b_hh, h0, c0] = &got_p[..] else { unreachable!("seven leaves") };
    let got = op::lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0, drop)?;
    got.y.mul(&dy)?.sum_all()?.backward()?;
    assert_close(&format!("{what} y"), &got.y.to_vec(), &want_y.to_vec(), 1e-6, 1e-5);
    let names = ["dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0"];
    for (k, ((name, g), w)) in names.iter().zip(&got_p).zip(&want_p).enumerate() {
        if frozen.contains(&k) {
            assert!(g.grad().is_none(), "{what}: frozen {name} got a gradient");
            continue;
        }
        let (g, w) = (g.grad().expect("fused grad").to_vec(), w.grad().expect("composed grad").to_vec());
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{what} {name}"), &g, &w, 1e-5 * scale, 1e-5);
    }
    Ok(())
}

#[test]
fn fused_op_matches_composed_autograd_ops() -> Result<()> {
    for (n, &(t, b, i, h)) in [(1, 1, 3, 5), (4, 3, 6, 17), (3, 19, 8, 20)].iter().enumerate() {
        check(&Case::new(t, b, i, h, 50 + n as u64), None, &[])?;
    }
    check(&Case::new(5, 4, 7, 18, 60), Some(DropMask { p: 0.4, seed: 11 }), &[])
}

/// A frozen layer (weights and biases) over a trainable input, and a trainable layer over a
/// frozen input with a detached state: what is left still matches the composed ops.
#[test]
fn frozen_weights_or_input_get_no_gradient_and_the_rest_still_match() -> Result<()> {
    let drop = Some(DropMask { p: 0.4, seed: 11 });
    check(&Case::new(4, 3, 6, 17, 70), drop, &[1, 2, 3, 4])?;
    check(&Case::new(4, 3, 6, 17, 71), drop, &[0, 5, 6])
}

#[test]
fn backward_twice_is_an_error_not_a_panic() -> Result<()> {
    let cs = Case::new(2, 2, 3, 4, 70);
    let p = leaves(&cs);
    let out = op::lstm(&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], None)?;
    let loss = out.y.sum_all()?;
    loss.backward()?;
    let err = loss.backward().expect_err("the second backward must fail");
    assert!(err.to_string().contains("twice"), "unexpected error: {err}");
    Ok(())
}

/// H = 0 is an error naming the op and the shapes (the fused loops would panic on it);
/// T = 0, B = 0 and I = 0 run forward and backward.
#[test]
fn zero_sizes_give_an_error_or_run() -> Result<()> {
    for (t, b, i, h) in [(2, 2, 3, 0), (2, 2, 0, 0), (0, 0, 0, 0)] {
        let p = leaves(&Case::new(t, b, i, h, 90));
        let err = match op::lstm(&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], None) {
            Ok(_) => panic!("H = 0 with x [{t}, {b}, {i}] must be an error"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("lstm") && err.contains("H must be"), "unexpected error for H = 0: {err}");
    }
    for (t, b, i, h) in [(0, 2, 3, 4), (2, 0, 3, 4), (2, 2, 0, 4), (2, 3, 0, 130)] {
        let p = leaves(&Case::new(t, b, i, h, 91));
        let out = op::lstm(&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], None)?;
        out.y.sum_all()?.backward()?;
        let dw = p[1].grad().expect("w_ih grad");
        assert_eq!(dw.shape(), &[4 * h, i], "x [{t}, {b}, {i}], H = {h}: dw_ih shape");
    }
    Ok(())
}
