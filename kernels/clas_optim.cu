// clas_optim.cu: the classifier's optimizer end: global gradient norm, the clip factor, and
// Adam(W) over a part of one parameter group (a contiguous range of the flat buffer,
// Layout::adam_parts; wd 0 for the batch-norm parts) with the group's own learning rate and
// step count (fastai's discriminative learning rates; frozen groups are not launched and
// their gradients are zeroed, so they leave the norm and keep their moments).
//
// Needs lm_hash.cu in front (lm_block_sum). Launched by crates/cuda/src/clas/kernels.rs;
// checked against ulmfit_tensor::optim::{clip_grad_norm, Adam} by
// crates/trainer/tests/clas_cuda_vs_cpu.rs.

// clas_sumsq_partial: partial[blockIdx] = sum of g[i]^2 over the block's grid-stride share.
//   g [n]   partial [gridDim.x]
// Geometry: a fixed grid (NORM_BLOCKS in kernels.rs), blockDim a multiple of 32.
extern "C" __global__ void clas_sumsq_partial(float* __restrict__ partial, const float* __restrict__ g, long long n) {
    float s = 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        s += g[i] * g[i];
    s = lm_block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// clas_clip_scale: clip[0] = ||g|| = sqrt(sum partial); clip[1] = max_norm / (||g|| + 1e-6)
// when ||g|| > max_norm (max_norm <= 0: never), else 1 (ulmfit_tensor::optim::clip_grad_norm).
//   partial [nparts]   clip [2]
// Geometry: one block, blockDim a multiple of 32.
extern "C" __global__ void clas_clip_scale(float* __restrict__ clip, const float* __restrict__ partial, int nparts,
                                           float max_norm) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = lm_block_sum(s);
    if (threadIdx.x == 0) {
        const float norm = sqrtf(s);
        clip[0] = norm;
        clip[1] = max_norm > 0.0f && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
    }
}

// clas_adam: Adam with decoupled weight decay on a part of one group (wd = 0 for the batch-norm
// parts, fastai's wd_bn_bias=False), its t-th update:
//   g = grad * clip[1];  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w = w (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   w, m, v, grad [n] (the part's range)   clip [2]
// Geometry: grid-stride over n.
extern "C" __global__ void clas_adam(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                                     const float* __restrict__ grad, long long n, const float* __restrict__ clip,
                                     float lr, float b1, float b2, float eps, float wd, int t) {
    const float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    const float decay = 1.0f - lr * wd, scale = clip[1];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float g = grad[i] * scale;
        const float mi = b1 * m[i] + (1.0f - b1) * g;
        const float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - lr * ((mi / c1) / (sqrtf(vi / c2) + eps));
    }
}
