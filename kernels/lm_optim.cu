// lm_optim.cu: the optimizer end of the LM step: step counter, global gradient norm and
// clipping, and one fused Adam(W) update over every parameter.
//
// Needs lm_hash.cu in front (lm_block_sum). Launched by crates/cuda/src/lm/kernels.rs
// (wrappers of the same names); checked against the CPU formulas (ulmfit_tensor::optim, PyTorch's
// clip_grad_norm_) by crates/cuda/tests/lm_vs_ref.rs. All parameters live in one flat buffer
// [P] and their gradients in another of the same layout; each parameter group (a contiguous
// range: one LSTM layer, or the embedding with the decoder bias) is one launch per pass.
// Hyper-parameters are read from device memory, one slot per group, so a captured graph
// follows changes:
//   hyper = [lr, beta1, beta2, eps, weight_decay, max_norm, frozen, step_offset]
// (max_norm <= 0: no clipping, read from group 0; frozen != 0: the group is neither counted
// in the norm nor updated; Adam's t = step[0] - step_offset, the group's own update count).

// lm_step_begin: step[0] += 1 (the optimizer step, also the mask counter). One thread.
extern "C" __global__ void lm_step_begin(unsigned int* step) { step[0] += 1u; }

// lm_sumsq_partial: partial[blockIdx] = sum of g[i]^2 over the block's grid-stride share
// of one group (0 for a frozen group).
//   g [n]   partial [gridDim.x]   hyper [8] (the group's slot)
// Geometry: a fixed grid (NORM_BLOCKS in kernels.rs), blockDim a multiple of 32.
extern "C" __global__ void lm_sumsq_partial(float* __restrict__ partial, const float* __restrict__ g,
                                            long long n, const float* __restrict__ hyper) {
    float s = 0.0f;
    const long long end = hyper[6] != 0.0f ? 0 : n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < end;
         i += (long long)gridDim.x * blockDim.x) {
        s += g[i] * g[i];
    }
    s = lm_block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// lm_clip_scale: clip[0] = ||g|| = sqrt(sum partial), clip[1] = the factor Adam multiplies
// the gradients by: max_norm / (||g|| + 1e-6) when that is below 1, else 1 (PyTorch).
//   partial [nparts]   clip [2]   hyper [8] (group 0's slot)
// Geometry: one block, blockDim a multiple of 32.
extern "C" __global__ void lm_clip_scale(float* __restrict__ clip, const float* __restrict__ partial,
                                         int nparts, const float* __restrict__ hyper) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = lm_block_sum(s);
    if (threadIdx.x == 0) {
        const float norm = sqrtf(s), max_norm = hyper[5];
        const float coef = max_norm / (norm + 1e-6f);
        clip[0] = norm;
        clip[1] = max_norm > 0.0f && coef < 1.0f ? coef : 1.0f;
    }
}

// lm_adam: Adam with decoupled weight decay (AdamW) on a part of one group, t = step[0] -
// step_offset; nothing for a frozen group; wd taken as 0 unless `do_wd` (fastai's name):
//   g = grad * clip[1];  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w = w (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   w, grad, m, v [n]   clip [2]   hyper [8] (the group's slot)
// Geometry: grid-stride over n.
extern "C" __global__ void lm_adam(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                                   const float* __restrict__ grad, long long n,
                                   const float* __restrict__ clip, const float* __restrict__ hyper,
                                   const unsigned int* __restrict__ step, int do_wd) {
    if (hyper[6] != 0.0f) return;
    const float lr = hyper[0], b1 = hyper[1], b2 = hyper[2], eps = hyper[3], wd = do_wd ? hyper[4] : 0.0f;
    const float t = (float)step[0] - hyper[7];
    const float c1 = 1.0f - powf(b1, t), c2 = 1.0f - powf(b2, t);
    const float decay = 1.0f - lr * wd, scale = clip[1];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float g = grad[i] * scale;
        const float mi = b1 * m[i] + (1.0f - b1) * g;
        const float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - lr * ((mi / c1) / (sqrtf(vi / c2) + eps));
    }
}
