// clas_head.cu: the classifier's pooling and head on the GPU: concat pooling [last, max, mean]
// over the BPT3C chunks' top-layer outputs (forward and backward), batch norm (train and eval,
// forward and backward), ReLU, softmax + cross-entropy, softmax alone, and y += x.
//
// Needs lm_hash.cu in front. Launched by crates/cuda/src/clas/kernels.rs (wrappers of the same
// names); checked against ulmfit_trainer::classifier (the CPU classifier) by
// crates/trainer/tests/clas_cuda_vs_cpu.rs. Each kernel follows the CPU loops' order of
// summation, so the two agree to rounding.
// Dimensions: B documents, E top-layer width, C channels (batch norm) or classes, N rows.
// Chunk c covers steps [c*bptt, c*bptt + len_c) of its rows_c first documents; its top-layer
// hidden states hs [len_c + 1, rows_c, E] (hs[0] = the carried state) start at hs_off[c] of
// one arena, so step pos of document b is hs[hs_off[pos / bptt] + ((pos % bptt + 1) * rows + b) * E].

#define CLAS_NEG_INF __int_as_float(0xff800000)

// clas_pool_fwd: out[b] = [h at step len_b - 1, max over steps [from_b, len_b), mean over them];
// argmax[b, e] = the first step holding the max (strict >, ascending steps, as the CPU). The
// last step counts only inside the window (an empty window gives last 0, max -inf, mean 0).
//   hs (arena)   hs_off [chunks]   rows [chunks]   lens, from [B]   out [B, 3E]   argmax [B, E]
// Geometry: grid-stride over B*E, one thread per (b, e) looping over the document's window.
extern "C" __global__ void clas_pool_fwd(float* __restrict__ out, int* __restrict__ argmax,
                                         const float* __restrict__ hs, const long long* __restrict__ hs_off,
                                         const int* __restrict__ rows, const int* __restrict__ lens,
                                         const int* __restrict__ from, int B, int E, int bptt) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < B * E; k += gridDim.x * blockDim.x) {
        const int b = k / E, e = k % E, len = lens[b];
        float sum = 0.0f, mx = CLAS_NEG_INF, last = 0.0f;
        int at = from[b];
        for (int pos = from[b]; pos < len; ++pos) {
            const int c = pos / bptt, s = pos % bptt;
            const float h = hs[hs_off[c] + ((long long)(s + 1) * rows[c] + b) * E + e];
            sum += h;
            if (h > mx) { mx = h; at = pos; }
            if (pos + 1 == len) last = h;
        }
        float* o = out + (long long)b * 3 * E;
        o[e] = last;
        o[E + e] = mx;
        o[2 * E + e] = sum / (float)(len > from[b] ? len - from[b] : 1);  // empty window: 0, as the CPU
        argmax[k] = at;
    }
}

// clas_pool_bwd: dy of chunk c (steps start.. start+len, rows first documents) from dpool:
// dmean / count on every pooled step, dmax on the argmax step, dlast on the last step.
//   dy [len, rows, E]   dpool [B, 3E]   argmax [B, E]   lens, from [B]
// Geometry: grid-stride over len*rows*E.
extern "C" __global__ void clas_pool_bwd(float* __restrict__ dy, const float* __restrict__ dpool,
                                         const int* __restrict__ argmax, const int* __restrict__ lens,
                                         const int* __restrict__ from, int start, int len, int rows, int E) {
    const int n = len * rows * E;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) {
        const int r = k / E, e = k % E, b = r % rows, pos = start + r / rows;
        float g = 0.0f;
        if (pos < lens[b] && pos >= from[b]) {
            const float* dp = dpool + (long long)b * 3 * E;
            g += dp[2 * E + e] / (float)(lens[b] - from[b]);
            if (argmax[b * E + e] == pos) g += dp[E + e];
            if (pos + 1 == lens[b]) g += dp[e];
        }
        dy[k] = g;
    }
}

// clas_ar_tar_bwd: adds to dy of one chunk (steps start.. start+len, its first `rows`
// documents) the gradient of fastai's classifier AR/TAR (ulmfit_trainer's clas_reg.rs): in
// fastai's layout document b is front-padded by front_b = (lens[0] - len_b) / bptt * bptt
// steps, its step q sits at position front_b + q, and its output counts where fastai ran it,
// q < stop_b = min(len_b rounded up to chunks, lens[0] - front_b), 0 elsewhere; the window is
// positions [first, lens[0]) (first = from[0]), L of them. With x_p the value at position p:
//   dx_p = ka x_p + kt (x_p - x_{p-1}) [p > first] - kt (x_{p+1} - x_p) [p < lens[0] - 1]
// ka = 2 alpha / (B L E), kt = 2 beta / (B (L-1) E) (0 without TAR).
//   dy [len, rows, E]   hs (arena)   hs_off, rows_c [chunks]   lens, from [B]
// Geometry: grid-stride over len*rows*E.
extern "C" __global__ void clas_ar_tar_bwd(float* __restrict__ dy, const float* __restrict__ hs,
                                           const long long* __restrict__ hs_off, const int* __restrict__ rows_c,
                                           const int* __restrict__ lens, const int* __restrict__ from, int start,
                                           int len, int rows, int E, int bptt, float ka, float kt) {
    const int n = len * rows * E, sl = lens[0], first = from[0];
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) {
        const int r = k / E, e = k % E, b = r % rows, q = start + r / rows;
        const int front = (sl - lens[b]) / bptt * bptt;
        const int stop = min((lens[b] + bptt - 1) / bptt * bptt, sl - front);
        const int pos = front + q;
        if (q >= stop || pos < first) continue;
        // The output of document b at its step t (< stop).
#define CLAS_H(t) hs[hs_off[(t) / bptt] + ((long long)((t) % bptt + 1) * rows_c[(t) / bptt] + b) * E + e]
        const float x = CLAS_H(q);
        float g = ka * x;
        if (pos > first) g += kt * (x - (q > 0 ? CLAS_H(q - 1) : 0.0f));
        if (pos + 1 < sl) g -= kt * ((q + 1 < stop ? CLAS_H(q + 1) : 0.0f) - x);
#undef CLAS_H
        dy[k] += g;
    }
}

// clas_bn_fwd: batch norm over N rows of x [N, C]. train != 0: batch mean and biased variance
// (each term divided by N, as the CPU), running stats updated with `momentum` (variance
// unbiased by N / (N - 1), PyTorch); else the running stats. y = gamma * xhat + beta.
//   x, xhat, y [N, C]   gamma, beta, run_mean, run_var, inv_std [C]
// Geometry: grid-stride over C, one thread per channel looping over the rows.
extern "C" __global__ void clas_bn_fwd(float* __restrict__ y, float* __restrict__ xhat, float* __restrict__ inv_std,
                                       float* __restrict__ run_mean, float* __restrict__ run_var,
                                       const float* __restrict__ x, const float* __restrict__ gamma,
                                       const float* __restrict__ beta, int N, int C, int train, float momentum,
                                       float eps) {
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < C; ch += gridDim.x * blockDim.x) {
        float mean = run_mean[ch], var = run_var[ch];
        if (train) {
            float m = 0.0f, v = 0.0f;
            for (int i = 0; i < N; ++i) m += x[(long long)i * C + ch] / (float)N;
            for (int i = 0; i < N; ++i) {
                const float d = x[(long long)i * C + ch] - m;
                v += d * d / (float)N;
            }
            const float unbiased = (float)N / (float)(N - 1);
            run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * m;
            run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * v * unbiased;
            mean = m;
            var = v;
        }
        const float is = 1.0f / sqrtf(var + eps);
        inv_std[ch] = is;
        for (int i = 0; i < N; ++i) {
            const long long k = (long long)i * C + ch;
            const float xh = (x[k] - mean) * is;
            xhat[k] = xh;
            y[k] = gamma[ch] * xh + beta[ch];
        }
    }
}

// clas_bn_bwd: training-mode batch-norm backward: dgamma = sum dy xhat, dbeta = sum dy,
// dx = inv_std / N * (N dxhat - sum dxhat - xhat sum(dxhat xhat)), dxhat = dy gamma.
//   dx, dy, xhat [N, C]   dgamma, dbeta, gamma, inv_std [C]   (dgamma, dbeta overwritten)
// Geometry: grid-stride over C, one thread per channel.
extern "C" __global__ void clas_bn_bwd(float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta,
                                       const float* __restrict__ dy, const float* __restrict__ xhat,
                                       const float* __restrict__ gamma, const float* __restrict__ inv_std, int N,
                                       int C) {
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < C; ch += gridDim.x * blockDim.x) {
        float dg = 0.0f, db = 0.0f;
        for (int i = 0; i < N; ++i) {
            const long long k = (long long)i * C + ch;
            dg += dy[k] * xhat[k];
            db += dy[k];
        }
        dgamma[ch] = dg;
        dbeta[ch] = db;
        const float g = gamma[ch], sum_dxhat = db * g, sum_dxhat_xhat = dg * g, n = (float)N;
        for (int i = 0; i < N; ++i) {
            const long long k = (long long)i * C + ch;
            dx[k] = inv_std[ch] / n * (n * (dy[k] * g) - sum_dxhat - xhat[k] * sum_dxhat_xhat);
        }
    }
}

// clas_relu_fwd: y = max(x, 0).   x, y [n]
// clas_relu_bwd: dx = x > 0 ? dy : 0.   x, dy, dx [n] (dx may alias dy)
// Geometry: grid-stride over n.
extern "C" __global__ void clas_relu_fwd(float* __restrict__ y, const float* __restrict__ x, int n) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) y[k] = fmaxf(x[k], 0.0f);
}

extern "C" __global__ void clas_relu_bwd(float* dx, const float* dy, const float* __restrict__ x, int n) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x)
        dx[k] = x[k] > 0.0f ? dy[k] : 0.0f;
}

// Softmax of one row of C logits into p (p may alias z); returns log-sum-exp.
__device__ __forceinline__ float clas_softmax_row(float* p, const float* z, int C) {
    float mx = CLAS_NEG_INF, sum = 0.0f;
    for (int j = 0; j < C; ++j) mx = fmaxf(mx, z[j]);
    for (int j = 0; j < C; ++j) {
        const float e = expf(z[j] - mx);
        p[j] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < C; ++j) p[j] *= inv;
    return mx + logf(sum);
}

// clas_xent: mean softmax cross-entropy of logits [N, C] against labels [N] (< C, checked on
// the host) into loss[0]; dlogits = (softmax - onehot) / N; ce [N] the per-row losses, summed
// by thread 0 in row order.
// Geometry: ONE block (any multiple of 32 threads), rows strided over its threads.
extern "C" __global__ void clas_xent(float* __restrict__ loss, float* __restrict__ ce, float* __restrict__ dlogits,
                                     const float* __restrict__ logits, const unsigned int* __restrict__ labels,
                                     int N, int C) {
    for (int r = threadIdx.x; r < N; r += blockDim.x) {
        const float* z = logits + (long long)r * C;
        float* d = dlogits + (long long)r * C;
        const float lse = clas_softmax_row(d, z, C);
        const unsigned int t = labels[r];
        ce[r] = lse - z[t];
        d[t] -= 1.0f;
        for (int j = 0; j < C; ++j) d[j] *= 1.0f / (float)N;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int r = 0; r < N; ++r) s += ce[r];
        loss[0] = s / (float)N;
    }
}

// clas_softmax: probs [N, C] = softmax of each row of logits [N, C].
// Geometry: grid-stride over N, one thread per row.
extern "C" __global__ void clas_softmax(float* __restrict__ probs, const float* __restrict__ logits, int N, int C) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < N; r += gridDim.x * blockDim.x)
        clas_softmax_row(probs + (long long)r * C, logits + (long long)r * C, C);
}

// clas_add: y += x, n elements (the per-chunk LSTM weight gradients into the flat gradients).
// Geometry: grid-stride over n.
extern "C" __global__ void clas_add(float* __restrict__ y, const float* __restrict__ x, long long n) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)gridDim.x * blockDim.x)
        y[k] += x[k];
}
