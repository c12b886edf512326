// lm_hash.cu: the counter-based hash every dropout mask of the LM step is drawn from, and the
// fixed-order block sum the loss and optimizer kernels share.
//
// Prepended to every other kernels/lm_*.cu source by crates/cuda/src/lm/kernels.rs (NVRTC
// sees one translation unit). Bit-for-bit twin: crates/cuda/src/lm/mask.rs, checked by
// crates/cuda/tests/lm_on_cpu.rs (CPU) and by the dropout-on comparisons of tests/lm_vs_ref.rs.
// Integer-only until the final 24-bit -> float, so host and device agree exactly.
//   key   = mix(mix(seed + GOLDEN * (step + 1)) ^ tensor * C2)      one per (seed, step, mask)
//   unit  = mix(key ^ (index * GOLDEN + C3)) >> 40, as a float in [0, 1)
//   scale = unit < p ? 0 : 1 / (1 - p)                              (p = 0 keeps everything)
// Compiled by NVRTC once per process, no fast math.

typedef unsigned long long u64;

// splitmix64's finaliser.
__device__ __forceinline__ u64 lm_mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The key of mask `tensor` at optimizer step `step` (see lm::mask::Tensor for the ids).
__device__ __forceinline__ u64 lm_mask_key(u64 seed, unsigned int step, unsigned int tensor) {
    return lm_mix(lm_mix(seed + 0x9E3779B97F4A7C15ull * ((u64)step + 1ull)) ^ ((u64)tensor * 0xD1B54A32D192ED03ull));
}

// Multiplier of element `index` of that mask: 0 (dropped) or 1 / (1 - p).
__device__ __forceinline__ float lm_keep_scale(u64 key, u64 index, float p) {
    const u64 z = lm_mix(key ^ (index * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
    const float unit = (float)(z >> 40) * (1.0f / 16777216.0f);
    return unit < p ? 0.0f : 1.0f / (1.0f - p);
}

// Sum of `v` over the block, in a fixed order (shuffle tree per warp, then warp 0 over the
// warp sums), so results repeat bit for bit. blockDim.x must be a multiple of 32, <= 1024;
// every thread must call it; every thread gets the sum.
__device__ __forceinline__ float lm_block_sum(float v) {
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();                     // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < nwarps ? warp_sums[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
