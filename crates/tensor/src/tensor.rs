//! The `Tensor`: an f32 array with a shape and, when it takes part in autograd,
//! a link to the op that made it.
//!
//! A `Tensor` is a cheap handle (`Rc`): cloning it shares the data. Data is row-major and
//! contiguous; ops that change the layout (transpose, narrow) copy, which keeps every kernel
//! a plain loop over a slice. Views are not worth their complexity at the sizes where the
//! engine spends its time (the LSTM and the decoder GEMM work on whole buffers anyway).

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::autograd::{self, Op};
use crate::error::{bad, Result};

/// A tensor: shape, data, and (when recorded) the op that produced it.
#[derive(Clone)]
pub struct Tensor(pub(crate) Rc<Node>);

pub(crate) struct Node {
    /// Unique, in creation order: the autograd's key for visited nodes and gradients.
    pub(crate) id: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: RefCell<Vec<f32>>,
    /// Accumulated gradient of a leaf that requires grad (`+=` over backward passes).
    pub(crate) grad: RefCell<Option<Tensor>>,
    /// Leaves: whether gradients flow into this tensor (false = frozen).
    /// Op outputs: whether any input required grad when the op ran.
    pub(crate) requires_grad: Cell<bool>,
    /// The op that produced this tensor and its inputs; `None` for leaves and detached values.
    pub(crate) creator: Option<(Box<dyn Op>, Vec<Tensor>)>,
}

impl Drop for Node {
    fn drop(&mut self) {
        crate::pool::give(std::mem::take(self.data.get_mut()));
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Tensor {
    fn build(
        data: Vec<f32>,
        shape: &[usize],
        requires_grad: bool,
        creator: Option<(Box<dyn Op>, Vec<Tensor>)>,
    ) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>(), "tensor data does not fill shape {shape:?}");
        Tensor(Rc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: shape.to_vec(),
            data: RefCell::new(data),
            grad: RefCell::new(None),
            requires_grad: Cell::new(requires_grad),
            creator,
        }))
    }

    /// A constant tensor (no gradient) from row-major data.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(bad("from_vec", format!("{} values cannot fill shape {shape:?} ({n} elements)", data.len())));
        }
        Ok(Tensor::build(data, shape, false, None))
    }

    /// A trainable leaf (requires grad) from row-major data.
    pub fn param(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::from_vec(data, shape)?;
        t.0.requires_grad.set(true);
        Ok(t)
    }

    /// A constant tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::build(vec![value; shape.iter().product()], shape, false, None)
    }

    /// A constant tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(value: f32) -> Tensor {
        Tensor::build(vec![value], &[], false, None)
    }

    /// The result of an op: records `op` and `inputs` for backward when grad mode is on and
    /// some input requires grad; otherwise a plain constant.
    pub fn from_op(data: Vec<f32>, shape: &[usize], inputs: &[&Tensor], op: impl Op + 'static) -> Tensor {
        let needs_grad = autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let creator = needs_grad.then(|| (Box::new(op) as Box<dyn Op>, inputs.iter().map(|&t| t.clone()).collect()));
        Tensor::build(data, shape, needs_grad, creator)
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// Size of dimension `axis`.
    pub fn dim(&self, axis: usize) -> usize {
        self.0.shape[axis]
    }

    /// Borrows the data (row-major).
    pub fn data(&self) -> Ref<'_, Vec<f32>> {
        self.0.data.borrow()
    }

    /// Mutably borrows the data: for optimizers and loaders. Bypasses autograd.
    pub fn data_mut(&self) -> RefMut<'_, Vec<f32>> {
        self.0.data.borrow_mut()
    }

    /// A copy of the data.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().clone()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data().as_slice() {
            [x] => Ok(*x),
            _ => Err(bad("item", format!("tensor of shape {:?} is not a single value", self.shape()))),
        }
    }

    /// Whether gradients flow into (or through) this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.get()
    }

    /// Freezes (`false`) or unfreezes (`true`) a leaf parameter. Gradual unfreezing uses this.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if self.0.creator.is_some() {
            return Err(bad("set_requires_grad", "only leaf tensors can be frozen or unfrozen"));
        }
        self.0.requires_grad.set(on);
        Ok(())
    }

    /// The accumulated gradient of a leaf, if a backward pass reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.borrow().clone()
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.borrow_mut() = None;
    }

    /// The same values cut off from the graph: no gradient flows back through the result.
    /// A constant is returned as is; anything else is copied (sharing would need another
    /// `Rc` layer in `Node`, and detach runs once per batch on small hidden states).
    pub fn detach(&self) -> Tensor {
        if self.0.creator.is_none() && !self.requires_grad() {
            return self.clone();
        }
        Tensor::build(self.to_vec(), self.shape(), false, None)
    }

    /// Whether two handles point at the same tensor.
    pub fn same(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn id(&self) -> usize {
        self.0.id
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.data();
        let head: Vec<f32> = data.iter().take(8).copied().collect();
        write!(f, "Tensor{:?}{}{:?}", self.shape(), if self.requires_grad() { " (grad) " } else { " " }, head)?;
        if data.len() > 8 {
            write!(f, "...")?;
        }
        Ok(())
    }
}
