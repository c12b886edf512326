// lstm_cell.cu: the pointwise half of one LSTM time step, forward and backward.
//
// Checked against ulmfit_lstm::reference::{forward, backward} by crates/cuda/tests/lstm_vs_ref.rs.
// The GEMMs (x.W_ih^T for all steps, h.W_hh^T per step, and every weight gradient) run in
// cuBLAS from crates/cuda/src/lstm.rs; these kernels do everything else of a step in one launch.
//
// Dimensions: T steps, B batch, H hidden. Gate order i, f, g, o (PyTorch): a row of 4H
// pre-activations holds [i | f | g | o], each H wide. All buffers are row-major f32.
//   i = sigmoid(.)   f = sigmoid(.)   g = tanh(.)   o = sigmoid(.)
//   c_t = f * c_{t-1} + i * g         h_t = o * tanh(c_t)
// Compiled by NVRTC once per process (crates/cuda/src/device.rs), no fast math.

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// lstm_cell_fwd: step t of the forward pass (Step::CellFwd of plan::forward_plan). Launched by
// `LstmCuda::lstm_cell_fwd` in crates/cuda/src/lstm.rs.
//   xw    [T, B, 4H]   x.W_ih^T for every step (read row t)
//   hw    [B, 4H]      h_{t-1}.W_hh^T for this step
//   b_ih  [4H], b_hh [4H]
//   hs    [T+1, B, H]  hidden states, hs[0] = h0; reads nothing, writes hs[t+1] = h_t
//   cs    [T+1, B, H]  cell states, cs[0] = c0; reads cs[t], writes cs[t+1]
//   act   [T, B, 4H]   writes the activated gates (i, f, g, o) of step t, kept for backward
// Geometry: one thread per (b, j), n = B*H threads, 1-D grid of 256-thread blocks.
extern "C" __global__ void lstm_cell_fwd(const float* __restrict__ xw, const float* __restrict__ hw,
                                         const float* __restrict__ b_ih, const float* __restrict__ b_hh,
                                         float* __restrict__ hs, float* __restrict__ cs,
                                         float* __restrict__ act, int t, int B, int H) {
    const int n = B * H;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const int b = idx / H, j = idx % H;
    const long long row = (long long)t * B + b;        // row of xw / act in [T*B, 4H]
    const float* xr = xw + row * 4 * H;
    const float* hr = hw + (long long)b * 4 * H;
    const float i = sigmoidf(xr[j]         + hr[j]         + b_ih[j]         + b_hh[j]);
    const float f = sigmoidf(xr[H + j]     + hr[H + j]     + b_ih[H + j]     + b_hh[H + j]);
    const float g = tanhf   (xr[2 * H + j] + hr[2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]);
    const float o = sigmoidf(xr[3 * H + j] + hr[3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]);
    const float c = f * cs[(long long)t * n + idx] + i * g;
    cs[(long long)(t + 1) * n + idx] = c;
    hs[(long long)(t + 1) * n + idx] = o * tanhf(c);
    float* ar = act + row * 4 * H;
    ar[j] = i; ar[H + j] = f; ar[2 * H + j] = g; ar[3 * H + j] = o;
}

// lstm_cell_bwd: step t of the backward pass, run for t = T-1 down to 0 (Step::CellBwd of
// plan::backward_plan). Launched by `LstmCuda::lstm_cell_bwd` in crates/cuda/src/lstm.rs.
//   dy     [T, B, H]    gradient of the loss w.r.t. the layer output y_t = h_t (read row t)
//   dh     [B, H]       recurrent gradient reaching h_t from step t+1 (dh_n at t = T-1)
//   dc     [B, H]       in: dL/dc_t from step t+1 (dc_n at t = T-1); out: dL/dc_{t-1}
//   cs     [T+1, B, H]  cell states from the forward (cs[t] = c_{t-1}, cs[t+1] = c_t)
//   act    [T, B, 4H]   activated gates from the forward
//   dgates [T, B, 4H]   writes row t: gradient w.r.t. the gate pre-activations
// Geometry: one thread per (b, j), n = B*H threads, 1-D grid of 256-thread blocks.
// Each thread reads and writes only its own dc element, so dc is updated in place.
extern "C" __global__ void lstm_cell_bwd(const float* __restrict__ dy, const float* __restrict__ dh,
                                         float* __restrict__ dc, const float* __restrict__ cs,
                                         const float* __restrict__ act, float* __restrict__ dgates,
                                         int t, int B, int H) {
    const int n = B * H;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const int b = idx / H, j = idx % H;
    const long long row = (long long)t * B + b;
    const float* ar = act + row * 4 * H;
    const float i = ar[j], f = ar[H + j], g = ar[2 * H + j], o = ar[3 * H + j];
    const float c_prev = cs[(long long)t * n + idx];
    const float tc = tanhf(cs[(long long)(t + 1) * n + idx]);
    const float dh_t = dy[(long long)t * n + idx] + dh[idx];
    // dL/dc_t: through h_t = o * tanh(c_t), plus the carry from step t+1
    const float dc_t = dc[idx] + dh_t * o * (1.0f - tc * tc);
    dc[idx] = dc_t * f;
    float* dr = dgates + row * 4 * H;
    dr[j]         = dc_t * g * i * (1.0f - i);        // d pre_i
    dr[H + j]     = dc_t * c_prev * f * (1.0f - f);   // d pre_f
    dr[2 * H + j] = dc_t * i * (1.0f - g * g);        // d pre_g
    dr[3 * H + j] = dh_t * tc * o * (1.0f - o);       // d pre_o
}
