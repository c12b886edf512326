// lm_dropout.cu: dropout masks and the embedding of the LM step, forward and backward.
//
// Needs lm_hash.cu in front. Launched by crates/cuda/src/lm/kernels.rs (wrappers of the same
// names); checked against crates/cuda/src/lm/reference.rs by crates/cuda/tests/lm_vs_ref.rs.
// Dimensions: T steps, B batch, E embedding width, V vocabulary; rows r = t*B + b.
// The optimizer step number is read from device memory (`step`), so a captured CUDA graph
// draws fresh masks every replay.

// lm_dropout: out[k] = in[k] * scale(k % period), k < n. The same kernel is a mask's forward
// and its backward (the gradient takes the same multiplier). Used for DropConnect on W_hh
// (period = n, once per sequence), hidden dropout between layers and output dropout
// (period = B*H: one variational mask [B, H] shared by every step).
//   out, in  [n]   may alias (in place)
// Geometry: grid-stride, any 1-D grid.
extern "C" __global__ void lm_dropout(float* out, const float* in, long long n, long long period,
                                      float p, unsigned int tensor, u64 seed,
                                      const unsigned int* step) {
    const u64 key = lm_mask_key(seed, *step, tensor);
    // 32-bit remainders where every index fits (a 64-bit one is a long software routine).
    const bool narrow = n <= 0xffffffffLL;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const u64 idx = narrow ? (u64)((unsigned int)k % (unsigned int)period) : (u64)(k % period);
        out[k] = in[k] * lm_keep_scale(key, idx, p);
    }
}

// lm_embed_fwd: x[r, e] = emb[ids[r], e] * word(ids[r]) * input(b, e): the gather with
// embedding dropout (one keep/drop per vocabulary row, mask `t_word`) and input dropout
// (variational [B, E] mask `t_input`) fused.
//   ids [T*B] (< V, checked on the host)   emb [V, E]   x [T, B, E]
// Geometry: grid-stride over T*B*E.
extern "C" __global__ void lm_embed_fwd(float* __restrict__ x, const float* __restrict__ emb,
                                        const unsigned int* __restrict__ ids, int TB, int B, int E,
                                        float p_word, unsigned int t_word, float p_input,
                                        unsigned int t_input, u64 seed, const unsigned int* step) {
    const u64 kw = lm_mask_key(seed, *step, t_word), ki = lm_mask_key(seed, *step, t_input);
    const long long n = (long long)TB * E;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(k / E), e = (int)(k % E), b = r % B;
        const unsigned int id = ids[r];
        x[k] = emb[(long long)id * E + e] * lm_keep_scale(kw, id, p_word) *
               lm_keep_scale(ki, (u64)b * E + e, p_input);
    }
}

// Capacity of lm_embed_bwd's shared list of rows (at least twice the largest blockDim).
#define LM_EMBED_LIST 2048

// The padding token (xxpad): no gradient into its row (fastai's padding_idx; crate::lm::PAD).
#define LM_PAD 1u

// lm_embed_bwd: demb[v, :] += word(v) * sum over rows q with ids[q] = v, in increasing q, of
// dx[q, :] * input(b_q, :), for every v but LM_PAD. Deterministic without atomics: the block
// of the first row holding a word owns that word's row of demb; other blocks return at once.
// The owner lists the rows holding its word in shared memory, in increasing order (a warp
// ballot per chunk of blockDim rows), and sums them in that order, flushing the list before
// it can overflow.
//   dx [T, B, E]   ids [T*B]   demb [V, E] (already holds the decoder's gradient)
// Geometry: one block per row p (grid T*B), blockDim E rounded up to 32 (at most 1024;
// larger E loops), threads over e.
extern "C" __global__ void lm_embed_bwd(float* __restrict__ demb, const float* __restrict__ dx,
                                        const unsigned int* __restrict__ ids, int TB, int B, int E,
                                        float p_word, unsigned int t_word, float p_input,
                                        unsigned int t_input, u64 seed, const unsigned int* step) {
    __shared__ int rows[LM_EMBED_LIST];
    __shared__ int warp_hits[32];
    const int p = blockIdx.x;
    const unsigned int v = ids[p];
    if (v == LM_PAD) return;  // the whole block: v is the block's word
    int earlier = 0;
    for (int q = threadIdx.x; q < p; q += blockDim.x) earlier |= ids[q] == v;
    if (__syncthreads_or(earlier)) return;  // a lower row owns word v
    const u64 kw = lm_mask_key(seed, *step, t_word), ki = lm_mask_key(seed, *step, t_input);
    const float word = lm_keep_scale(kw, v, p_word);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int e0 = 0; e0 < E; e0 += blockDim.x) {
        const int e = e0 + threadIdx.x;
        float acc = 0.0f;
        int listed = 0;  // rows in the list; the same in every thread
        for (int c0 = p; c0 < TB; c0 += blockDim.x) {
            const int q = c0 + threadIdx.x;
            const bool hit = q < TB && ids[q] == v;
            const unsigned int ballot = __ballot_sync(0xffffffffu, hit);
            if (lane == 0) warp_hits[warp] = __popc(ballot);
            __syncthreads();
            // This thread's slot: rows listed before, hits of lower warps, lower lanes.
            int at = listed + __popc(ballot & ((1u << lane) - 1u));
            for (int w = 0; w < nwarps; ++w) {
                if (w < warp) at += warp_hits[w];
                listed += warp_hits[w];
            }
            if (hit) rows[at] = q;
            __syncthreads();  // the list is complete; warp_hits is read by everyone
            const bool last = c0 + (int)blockDim.x >= TB;
            if (last || listed > LM_EMBED_LIST - (int)blockDim.x) {
                if (e < E) {
                    for (int j = 0; j < listed; ++j) {
                        const int r = rows[j];
                        acc += dx[(long long)r * E + e] * lm_keep_scale(ki, (u64)(r % B) * E + e, p_input);
                    }
                }
                __syncthreads();  // before the list is refilled
                listed = 0;
            }
        }
        if (e < E) demb[(long long)v * E + e] += word * acc;
    }
}
