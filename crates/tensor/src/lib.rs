//! ulmfit-tensor: f32 tensors with reverse-mode autograd (being built).
pub mod gemm;
