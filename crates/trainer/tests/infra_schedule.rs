//! Schedules against their formulas at hand-computed points (values worked out in comments).

use ulmfit_tensor::optim::ParamGroup;
use ulmfit_tensor::Tensor;
use ulmfit_trainer::schedule::*;

fn close(got: f32, want: f64, what: &str) {
    let tol = 1e-6 * want.abs().max(1e-6);
    assert!((got as f64 - want).abs() <= tol, "{what}: got {got:e}, want {want:e} (diff {:e})", got as f64 - want);
}

#[test]
fn slanted_triangular_matches_eq3() {
    // T = 1000, cut_frac 0.1 -> cut = 100, cut * (1/cut_frac - 1) = 900; lr = 0.01 (1 + 31 p) / 32.
    let lr = |t| slanted_triangular(t, 1000, 0.01, 0.1, 32.0);
    close(lr(0), 0.01 / 32.0, "t=0, p=0");
    close(lr(50), 0.01 * 16.5 / 32.0, "t=50, p=0.5");
    close(lr(100), 0.01, "t=cut, p=1");
    close(lr(550), 0.01 * 16.5 / 32.0, "t=550, p=1-450/900");
    close(lr(1000), 0.01 / 32.0, "t=T, p=0");
    // Rises strictly to the cut, falls strictly after it.
    assert!((1..=100).all(|t| lr(t) > lr(t - 1)) && (101..=1000).all(|t| lr(t) < lr(t - 1)));
    // T = 15: cut = floor(1.5) = 1; eq. 3 would give p = 1 - 14/9 < 0 at t = 15; clamped to 0.
    close(slanted_triangular(15, 15, 0.01, 0.1, 32.0), 0.01 / 32.0, "clamped end");
    close(slanted_triangular(10, 15, 0.01, 0.1, 32.0), 0.01 * (1.0 + (1.0 - 9.0 / 9.0) * 31.0) / 32.0, "T=15 t=10");
    // T = 5: floor(0.5) = 0 -> cut = 1 (no division by zero).
    close(slanted_triangular(1, 5, 0.01, 0.1, 32.0), 0.01, "tiny T peaks at t=1");
}

#[test]
fn one_cycle_matches_fastai_combined_cos() {
    // lr_max 1e-2: start 1e-2/25 = 4e-4, end 1e-2/1e5 = 1e-7; SchedCos(a, b)(x) = a + (1 + cos(pi (1 - x))) (b - a) / 2.
    let oc = OneCycle::new(1e-2);
    let at = |s, t| oc.at(s, t);
    let (lr, m) = at(0, 200);
    close(lr, 4e-4, "start lr");
    close(m, 0.95, "start mom");
    let (lr, m) = at(25, 200); // pos 0.125 = half of warm-up: midpoints
    close(lr, (4e-4 + 1e-2) / 2.0, "warm-up midpoint lr");
    close(m, 0.90, "warm-up midpoint mom");
    let (lr, m) = at(50, 200); // pos 0.25 = peak
    close(lr, 1e-2, "peak lr");
    close(m, 0.85, "peak mom");
    let (lr, m) = at(125, 200); // pos 0.625 = half of the anneal
    close(lr, (1e-2 + 1e-7) / 2.0, "anneal midpoint lr");
    close(m, 0.90, "anneal midpoint mom");
    let (lr, m) = at(200, 200);
    close(lr, 1e-7, "end lr");
    close(m, 0.95, "end mom");
    // pos 1/16 = a quarter of the warm-up: (1 + cos(0.75 pi)) / 2 = 0.1464466094.
    close(at(25, 400).0, 4e-4 + 0.146_446_609_4 * (1e-2 - 4e-4), "warm-up quarter lr");
    // Printed by fastai 2.8.12: combined_cos(0.25, 1e-2/25, 1e-2, 1e-2/1e5)(77/200), and for moms 0.95/0.85/0.95.
    let (lr, m) = at(77, 200);
    close(lr, 0.00922164747633119, "fastai lr at 77/200");
    close(m, 0.8577836030727188, "fastai mom at 77/200");
}

#[test]
fn schedule_scales_each_group_peak() {
    let p = || vec![Tensor::param(vec![0.0], &[1]).unwrap()];
    let mut groups = vec![ParamGroup::new(p(), 0.0), ParamGroup::new(p(), 0.0)];
    let sched = Schedule::OneCycle(OneCycle { moms: (0.8, 0.7, 0.8), ..OneCycle::new(123.0) });
    sched.apply(&mut groups, &[1e-3, 1e-2], 50, 200);
    close(groups[0].lr, 1e-3, "group 0 at the peak");
    close(groups[1].lr, 1e-2, "group 1 at the peak");
    close(groups[1].betas.0, 0.7, "beta1 at the peak");
    let stlr = Schedule::Slanted { cut_frac: 0.1, ratio: 32.0 };
    stlr.apply(&mut groups, &[1e-3, 1e-2], 0, 1000);
    close(groups[1].lr, 1e-2 / 32.0, "stlr start");
    close(groups[1].betas.0, 0.7, "stlr leaves beta1");
}

#[test]
fn discriminative_and_slice_lrs() {
    let d = discriminative_lrs(1e-2, 5, 2.6);
    let want = [1e-2 / 45.6976, 1e-2 / 17.576, 1e-2 / 6.76, 1e-2 / 2.6, 1e-2];
    for (g, (&got, &w)) in d.iter().zip(&want).enumerate() {
        close(got, w, &format!("discriminative group {g}"));
    }
    // slice(lr / 2.6^4, lr) over 5 groups is exactly x2.6 per group.
    let s = slice_lrs(1e-2 / SLICE_DIV, 1e-2, 5);
    for (g, (&got, &w)) in s.iter().zip(&want).enumerate() {
        close(got, w, &format!("slice group {g}"));
    }
    // Printed by fastai 2.8.12: even_mults(1e-2/2.6**4, 1e-2, 5).
    let fastai = [0.00021882987290360977, 0.0005689576695493855, 0.0014792899408284023, 0.0038461538461538455, 0.01];
    for (g, (&got, &w)) in s.iter().zip(&fastai).enumerate() {
        close(got, w, &format!("fastai even_mults group {g}"));
    }
    let s = slice_lrs(1e-4, 1e-2, 3);
    for (g, (&got, w)) in s.iter().zip([1e-4, 1e-3, 1e-2]).enumerate() {
        close(got, w, &format!("slice(1e-4, 1e-2) group {g}"));
    }
    assert_eq!(slice_lrs(1e-4, 1e-2, 1), vec![1e-2]);
    assert_eq!(discriminative_lrs(3e-3, 1, 2.6), vec![3e-3]);
}

#[test]
fn freeze_stages_and_fastai_recipe() {
    let r = fastai_classifier_recipe(2e-2);
    let want = [(1, 1, 2e-2, 1.0), (2, 1, 1e-2, 45.6976), (3, 1, 5e-3, 45.6976), (usize::MAX, 2, 1e-3, 45.6976)];
    assert_eq!(r.len(), 4, "{r:?}");
    for (i, (s, &(n, e, lr, div))) in r.iter().zip(&want).enumerate() {
        assert_eq!((s.trainable_groups_from_top, s.epochs), (n, e), "stage {i}: {s:?}");
        close(s.lr_max, lr, &format!("stage {i} lr"));
        close(s.lr_div, div, &format!("stage {i} lr_div"));
    }
    close(fastai_classifier_recipe(1e-2)[1].lr_max, 5e-3, "scaled recipe");
    // Stage 1 uses one LR everywhere; stage 2's top two groups are 1e-2 and 1e-2 / 2.6.
    assert!(r[0].lrs(5).iter().all(|&lr| lr == 2e-2));
    close(r[1].lrs(5)[3], 1e-2 / 2.6, "stage 2 group 3");
    // Trainable groups: 5 groups, bottom = 0.
    let trainable = |s: &FreezeStage| (0..5).filter(|&g| s.is_trainable(g, 5)).collect::<Vec<_>>();
    assert_eq!(trainable(&r[0]), vec![4]);
    assert_eq!(trainable(&r[1]), vec![3, 4]);
    assert_eq!(trainable(&r[2]), vec![2, 3, 4]);
    assert_eq!(trainable(&r[3]), vec![0, 1, 2, 3, 4]);
    // apply() freezes the parameters of the other groups.
    let groups: Vec<_> = (0..3).map(|_| ParamGroup::new(vec![Tensor::param(vec![0.0], &[1]).unwrap()], 0.0)).collect();
    r[1].apply(&groups).unwrap();
    let flags: Vec<bool> = groups.iter().map(|g| g.params[0].requires_grad()).collect();
    assert_eq!(flags, vec![false, true, true]);
    r[3].apply(&groups).unwrap();
    assert!(groups.iter().all(|g| g.params[0].requires_grad()));
}
