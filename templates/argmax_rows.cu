{% include "prelude.cu" %}
{
  // The greedy token of row `tile` of the logits: the first index of the largest value, NaN
  // never chosen unless the whole row is NaN (then 0) — the host's rule, runtime/src/generate/
  // sampling.rs `argmax` (docs/KERNELS.md "decode_rows", greedy tokens on the device). Two
  // passes over the row: the largest value (fmaxf ignores NaN), then the first index holding it.
  __shared__ float wmax[32];
  __shared__ int wfirst[32];
  const long r = tile;
  const act_t* x = logits + r * {{ x_stride }};
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x) m = fmaxf(m, to_f(x[c]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) wmax[warp] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < nw; ++w) m = fmaxf(m, wmax[w]);
  int first = {{ width }};
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x) {
    if (to_f(x[c]) == m) {
      first = c;
      break;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
  if (lane == 0) wfirst[warp] = first;
  __syncthreads();
  if (threadIdx.x == 0) {
    int f = {{ width }};
    for (int w = 0; w < nw; ++w) f = min(f, wfirst[w]);
    out[r] = f < {{ width }} ? f : 0;
  }
}
