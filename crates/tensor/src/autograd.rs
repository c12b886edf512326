//! Reverse-mode autograd: the `Op` trait every differentiable op implements, grad mode,
//! and `Tensor::backward`, which is one topological sort and one reverse loop (micrograd).
//!
//! Gradients are plain tensors. Leaves that require grad accumulate them with `+=` across
//! backward passes until `zero_grad`; intermediate gradients live only during the pass.
//! Nodes are visited in a fixed order (depth-first over inputs in recorded order), so
//! floating-point sums repeat exactly.

use std::cell::Cell;
use std::collections::HashMap;

use crate::error::{bad, Result};
use crate::Tensor;

/// A differentiable operation, as recorded on the graph.
///
/// The forward runs eagerly (in the `Tensor` method that creates the op); the op keeps what
/// its backward needs and computes one gradient per input from the output gradient.
pub trait Op {
    /// The op's name, for error messages.
    fn name(&self) -> &'static str;
    /// Gradients for each of `inputs` (same shapes), given the output `out` and its gradient
    /// `dout`. An entry may be `None` when that input needs no gradient.
    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops currently record themselves for backward.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with grad mode off: no op records itself (evaluation, optimizer updates).
/// The previous mode comes back when `f` returns or panics.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _restore = GradModeGuard(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Puts back the grad mode it holds when dropped, also while unwinding.
struct GradModeGuard(bool);

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

impl Tensor {
    /// Back-propagates from this scalar: adds d(self)/d(leaf) into every leaf's `grad`.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(bad("backward", format!("needs a scalar, got shape {:?}", self.shape())));
        }
        self.backward_with(Tensor::full(self.shape(), 1.0))
    }

    /// Back-propagates a given output gradient `dself` (same shape as `self`).
    pub fn backward_with(&self, dself: Tensor) -> Result<()> {
        if dself.shape() != self.shape() {
            return Err(crate::error::mismatch("backward", self.shape(), dself.shape()));
        }
        if !self.requires_grad() {
            return Err(bad("backward", "the tensor does not depend on anything that requires grad"));
        }
        // Backward computations must not record themselves on the graph.
        no_grad(|| self.run_backward(dself))
    }

    fn run_backward(&self, dself: Tensor) -> Result<()> {
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(self.id(), dself);
        for node in topo_order(self) {
            let Some(dout) = grads.remove(&node.id()) else { continue };
            match &node.0.creator {
                None => accumulate_leaf(&node, dout)?,
                Some((op, inputs)) => {
                    let dinputs = op.backward(inputs, &node, &dout)?;
                    for (input, dinput) in inputs.iter().zip(dinputs) {
                        let Some(dinput) = dinput else { continue };
                        if !input.requires_grad() {
                            continue;
                        }
                        if dinput.shape() != input.shape() {
                            return Err(crate::error::mismatch(op.name(), input.shape(), dinput.shape()));
                        }
                        let merged = match grads.remove(&input.id()) {
                            Some(prev) => add_into(prev, &dinput),
                            None => dinput,
                        };
                        grads.insert(input.id(), merged);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Nodes reachable from `root` through recorded ops, each after everything that uses it
/// (so the root comes first). Iterative DFS: an unrolled graph can be deep.
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = std::collections::HashSet::new();
    // (node, whether its inputs were already pushed)
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some((_, inputs)) = &node.0.creator {
            for input in inputs.iter().filter(|t| t.requires_grad()) {
                if !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order.reverse();
    order
}

fn accumulate_leaf(leaf: &Tensor, dout: Tensor) -> Result<()> {
    let mut grad = leaf.0.grad.borrow_mut();
    *grad = Some(match grad.take() {
        Some(prev) => add_into(prev, &dout),
        None => dout.detach(),
    });
    Ok(())
}

/// `acc += g`, reusing `acc`'s buffer when nothing else holds it.
fn add_into(acc: Tensor, g: &Tensor) -> Tensor {
    let acc = if std::rc::Rc::strong_count(&acc.0) == 1 && acc.0.creator.is_none() { acc } else { acc.detach_copy() };
    acc.data_mut().iter_mut().zip(g.data().iter()).for_each(|(a, b)| *a += b);
    acc
}

impl Tensor {
    /// A fresh constant copy (never shares the buffer).
    fn detach_copy(&self) -> Tensor {
        Tensor::from_vec(self.to_vec(), self.shape()).expect("copy has the same shape")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_grad_restores_grad_mode_after_a_panic() {
        assert!(is_grad_enabled());
        let caught = std::panic::catch_unwind(|| no_grad(|| panic!("deliberate panic inside no_grad")));
        assert!(caught.is_err(), "the closure's panic must reach the caller");
        assert!(is_grad_enabled(), "no_grad left grad mode off after its closure panicked");
        // Nested calls restore the outer setting, not `true`.
        no_grad(|| {
            let _ = std::panic::catch_unwind(|| no_grad(|| panic!("deliberate nested panic")));
            assert!(!is_grad_enabled(), "an inner no_grad turned grad mode back on inside an outer one");
        });
    }
}
