// lm_loss.cu: the loss of the LM step: output dropout with AR / TAR, the tied decoder's fused
// softmax + cross-entropy, and the total, forward and backward.
//
// Needs lm_hash.cu in front. Launched by crates/cuda/src/lm/kernels.rs (wrappers of the same
// names); checked against crates/cuda/src/lm/reference.rs by crates/cuda/tests/lm_vs_ref.rs.
// Dimensions: T steps, B batch, E width of the last layer, V vocabulary, N = T*B rows.
//   loss = mean_r CE(logits[r] + bias, target[r])                       (cross-entropy)
//        + alpha * mean(dropped^2)                                     (AR, on the dropped output)
//        + beta * mean over t >= 1 of (raw[t] - raw[t-1])^2            (TAR, on the raw output)
// Every sum runs in a fixed order (lm_block_sum), so a step repeats bit for bit.

// -infinity (NVRTC has no math.h macros).
#define LM_NEG_INF __int_as_float(0xff800000)

// Maximum of `v` over the block; same contract as lm_block_sum.
__device__ __forceinline__ float lm_block_max(float v) {
    __shared__ float warp_max[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    v = lane < nwarps ? warp_max[lane] : LM_NEG_INF;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// lm_reg_fwd: output dropout of row r, dropped[r] = raw[r] * out_mask(b, :), and the row's AR
// and TAR sums: ar[r] = sum dropped[r]^2, tar[r] = sum (raw[r] - raw[r - B])^2 (0 when t = 0).
//   raw [N, E] (the last layer's output, hs[1..])   dropped [N, E]   ar, tar [N]
// Geometry: one block per row (grid N), blockDim a multiple of 32.
extern "C" __global__ void lm_reg_fwd(float* __restrict__ dropped, float* __restrict__ ar,
                                      float* __restrict__ tar, const float* __restrict__ raw,
                                      int B, int E, float p_out, unsigned int t_out, u64 seed,
                                      const unsigned int* step) {
    const int r = blockIdx.x, b = r % B;
    const u64 key = lm_mask_key(seed, *step, t_out);
    const float* x = raw + (long long)r * E;
    float sq = 0.0f, dsq = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float d = x[e] * lm_keep_scale(key, (u64)b * E + e, p_out);
        dropped[(long long)r * E + e] = d;
        sq += d * d;
        if (r >= B) {
            const float diff = x[e] - x[e - (long long)B * E];
            dsq += diff * diff;
        }
    }
    sq = lm_block_sum(sq);
    dsq = lm_block_sum(dsq);
    if (threadIdx.x == 0) {
        ar[r] = sq;
        tar[r] = dsq;
    }
}

// lm_xent: softmax + cross-entropy of row r over its V real columns, forward and backward in
// one pass pair:
//   z = logits[r, :V] + bias[:V];  ce[r] = logsumexp(z) - z[target[r]]
//   logits[r, :V] <- (softmax(z) - onehot(target[r])) * inv_n     (dL/dlogits, in place)
//   logits[r, V:ld] <- 0                                            (padding: no gradient)
//   logits [N, ld]   bias [ld]   (ld >= V a multiple of 4, both 16-byte aligned: the padded
//   vocabulary)   targets [N] (< V, checked on the host)   ce [N]
// float4 loads and stores (four columns per thread per trip) keep enough bytes in flight to
// stream the [N, ld] logits at memory speed.
// Geometry: one block per row (grid N), blockDim a multiple of 32 (1024).
extern "C" __global__ void lm_xent(float* __restrict__ logits, float* __restrict__ ce,
                                   const float* __restrict__ bias,
                                   const unsigned int* __restrict__ targets, int V, int ld,
                                   float inv_n) {
    const int r = blockIdx.x, n4 = ld >> 2;
    float* z = logits + (long long)r * ld;
    float4* z4 = reinterpret_cast<float4*>(z);
    const float4* b4 = reinterpret_cast<const float4*>(bias);
    // Online softmax: each thread keeps its max m and sum s of exp(z - m).
    float m = LM_NEG_INF, s = 0.0f;
    for (int j = threadIdx.x; j < n4; j += blockDim.x) {
        const float4 a = z4[j], b = b4[j];
        const float zs[4] = {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            if (4 * j + c >= V) break;
            const float zv = zs[c];
            if (zv > m) {
                s = s * expf(m - zv) + 1.0f;
                m = zv;
            } else {
                s += expf(zv - m);
            }
        }
    }
    const float mx = lm_block_max(m);
    const float sum = lm_block_sum(m == LM_NEG_INF ? 0.0f : s * expf(m - mx));
    const float lse = mx + logf(sum);
    const int tg = (int)targets[r];
    if (threadIdx.x == 0) ce[r] = lse - (z[tg] + bias[tg]);
    __syncthreads();  // z[tg] is read above before it is overwritten below
    for (int j = threadIdx.x; j < n4; j += blockDim.x) {
        const float4 a = z4[j], b = b4[j];
        const float zs[4] = {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w};
        float d[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int v = 4 * j + c;
            d[c] = v < V ? (expf(zs[c] - lse) - (v == tg ? 1.0f : 0.0f)) * inv_n : 0.0f;
        }
        z4[j] = make_float4(d[0], d[1], d[2], d[3]);
    }
}

// Row groups of lm_bias_grad (its blockDim is 32 * LM_BIAS_GROUPS).
#define LM_BIAS_GROUPS 16

// lm_bias_grad: the decoder bias's gradient, dbias[v] = sum over rows r of dlogits[r, v],
// v < ld. Thread (g, c) of block x sums rows g, g + 16, ... of column v = 32 x + c in
// increasing order, then the first row group adds the 16 group sums in order: a fixed order
// (no atomics), so a step repeats bit for bit; each warp reads 128 contiguous bytes per row.
//   dlogits [N, ld]   dbias [ld] (padding columns of dlogits are 0, so their sums are 0)
// Geometry: blockDim 32 * LM_BIAS_GROUPS = 512, grid ceil(ld / 32).
extern "C" __global__ void lm_bias_grad(float* __restrict__ dbias, const float* __restrict__ dlogits,
                                        int N, int ld) {
    __shared__ float part[LM_BIAS_GROUPS][32];
    const int c = threadIdx.x & 31, g = threadIdx.x >> 5;
    const int v = blockIdx.x * 32 + c;
    float acc = 0.0f;
    if (v < ld) {
#pragma unroll 4
        for (int r = g; r < N; r += LM_BIAS_GROUPS) acc += dlogits[(long long)r * ld + v];
    }
    part[g][c] = acc;
    __syncthreads();
    if (g == 0 && v < ld) {
        float s = 0.0f;
        for (int k = 0; k < LM_BIAS_GROUPS; ++k) s += part[k][c];
        dbias[v] = s;
    }
}

// lm_loss_sum: the total loss from the row sums, in a fixed order:
//   out[0] = total, out[1] = cross-entropy, out[2] = alpha * AR, out[3] = beta * TAR
//   ce, ar, tar [N]; ar_div = N*E, tar_div = (T-1)*B*E (0 when T = 1: no TAR)
// Geometry: one block, blockDim a multiple of 32 (1024).
extern "C" __global__ void lm_loss_sum(float* __restrict__ out, const float* __restrict__ ce,
                                       const float* __restrict__ ar, const float* __restrict__ tar,
                                       int N, float alpha, float ar_div, float beta, float tar_div) {
    float c = 0.0f, a = 0.0f, t = 0.0f;
    for (int r = threadIdx.x; r < N; r += blockDim.x) {
        c += ce[r];
        a += ar[r];
        t += tar[r];
    }
    c = lm_block_sum(c) / (float)N;
    a = alpha * lm_block_sum(a) / ar_div;
    t = tar_div > 0.0f ? beta * lm_block_sum(t) / tar_div : 0.0f;
    if (threadIdx.x == 0) {
        out[0] = c + a + t;
        out[1] = c;
        out[2] = a;
        out[3] = t;
    }
}

// lm_reg_bwd: dL/draw from the decoder and the regularizers, k = r*E + e, r = t*B + b:
//   dy[k] = s * (ddropped[k] + 2 alpha / ar_div * dropped[k])           s = out_mask(b, e)
//         + 2 beta / tar_div * ((raw[k] - raw[k - BE]) [t > 0] - (raw[k + BE] - raw[k]) [t < T-1])
//   ddropped [N, E] (dL/ddropped through the decoder)   dropped, raw [N, E]   dy [N, E]
// Geometry: grid-stride over N*E.
extern "C" __global__ void lm_reg_bwd(float* __restrict__ dy, const float* __restrict__ ddropped,
                                      const float* __restrict__ dropped, const float* __restrict__ raw,
                                      int T, int B, int E, float alpha, float ar_div, float beta,
                                      float tar_div, float p_out, unsigned int t_out, u64 seed,
                                      const unsigned int* step) {
    const u64 key = lm_mask_key(seed, *step, t_out);
    const long long n = (long long)T * B * E, be = (long long)B * E;
    const float c_ar = 2.0f * alpha / ar_div;
    const float c_tar = tar_div > 0.0f ? 2.0f * beta / tar_div : 0.0f;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(k / be);
        const long long be_k = k % be;  // b*E + e
        const float s = lm_keep_scale(key, (u64)be_k, p_out);
        float g = s * (ddropped[k] + c_ar * dropped[k]);
        if (t > 0) g += c_tar * (raw[k] - raw[k - be]);
        if (t < T - 1) g -= c_tar * (raw[k + be] - raw[k]);
        dy[k] = g;
    }
}
