{% include "prelude.cu" %}
{
  // w ⊙ groupnorm(y ⊙ silu(z)), gate before norm, f32 math (ZAMBA2.md §3.2, §6.7).
  // One block per (row, group of {{ group }} channels).
  __shared__ float scratch[32];
  const long r = tile;
  const int c0 = blockIdx.y * {{ group }};
  const long yo = r * {{ y_stride }} + c0, zo = r * {{ z_stride }} + c0;
  float ss = 0.f;
  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x) {
    const float q = to_f(y[yo + c]) * silu_f(to_f(z[zo + c]));
    ss += q * q;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.f / sqrtf(ss / {{ group }}.f + {{ eps }});
  act_t* o = out + r * {{ width }} + c0;
  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x) {
    const float q = to_f(y[yo + c]) * silu_f(to_f(z[zo + c]));
    o[c] = from_f<act_t>(to_f(weight[c0 + c]) * rnd<act_t>(q * inv));
  }
}
