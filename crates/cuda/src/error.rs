//! Errors of the CUDA backend: missing driver, out of memory, and wrapped cudarc errors.

/// Everything that can go wrong on the GPU path. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libcuda could not be loaded, or it found no usable GPU.
    #[error("no CUDA driver found (libcuda.so); use --device cpu ({0})")]
    NoDriver(String),
    /// A device allocation failed for lack of memory.
    #[error(
        "out of GPU memory allocating {bytes} bytes ({mib:.1} MiB) for {what}; \
         try a smaller batch (--batch) or a shorter sequence",
        mib = *bytes as f64 / (1024.0 * 1024.0)
    )]
    OutOfMemory {
        /// What the allocation was for.
        what: String,
        /// Its size in bytes.
        bytes: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {op}: {source}")]
    Driver {
        /// The operation that failed.
        op: String,
        /// cudarc's error.
        source: cudarc::driver::DriverError,
    },
    /// NVRTC could not compile a kernel file; carries the compiler log.
    #[error("NVRTC failed to compile {file} for {arch}: {log}")]
    Compile {
        /// The kernel file, e.g. "kernels/lstm_cell.cu".
        file: &'static str,
        /// The target, e.g. "compute_90".
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {op}: {source}")]
    Cublas {
        /// The operation that failed.
        op: String,
        /// cudarc's error.
        source: cudarc::cublas::result::CublasError,
    },
    /// A layer with a zero dimension.
    #[error("LSTM dims must all be positive, got {0:?}")]
    EmptyDims(ulmfit_lstm::LstmDims),
    /// Host data has the wrong length for the layer's dims.
    #[error("{op}: {what} has {got} elements, expected {want}")]
    Shape {
        /// The operation that checked.
        op: &'static str,
        /// The input or dimension.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length the dims call for.
        want: usize,
    },
}

/// Result of the CUDA backend.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds the operation name to a driver error: `stream.synchronize().op("forward sync")?`.
pub trait DriverContext<T> {
    /// Wraps the error with `op`.
    fn op(self, op: &str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|source| Error::Driver { op: op.to_string(), source })
    }
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::cublas::result::CublasError> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|source| Error::Cublas { op: op.to_string(), source })
    }
}
