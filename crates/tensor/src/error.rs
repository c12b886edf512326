//! The engine's error type: every failure names the op and the shapes or values involved.

use std::fmt;

/// Errors returned by tensor operations, autograd and optimizers.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },
    /// A single operand whose shape, axis or argument the op cannot take.
    BadArgument { op: &'static str, msg: String },
}

/// Shorthand for `Result<T, ulmfit_tensor::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => write!(f, "{op}: shapes {lhs:?} and {rhs:?} do not fit"),
            Error::BadArgument { op, msg } => write!(f, "{op}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Builds an `Error::BadArgument` for `op`.
pub(crate) fn bad(op: &'static str, msg: impl Into<String>) -> Error {
    Error::BadArgument { op, msg: msg.into() }
}

/// Builds an `Error::ShapeMismatch` for `op`.
pub(crate) fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Error {
    Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec() }
}
