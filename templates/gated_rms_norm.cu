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
{% if split %}  // With `split`, written as the bf16 hi and lo planes its GEMMs read (templates/split_bf16.cu).
  bf16_t* o = out + r * {{ 2 * width }} + c0;
{% else %}  act_t* o = out + r * {{ width }} + c0;
{% endif %}  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x) {
    const float q = to_f(y[yo + c]) * silu_f(to_f(z[zo + c]));
{% if split %}    store_split_bf16(o + c, {{ width }}, to_f(weight[c0 + c]) * rnd<act_t>(q * inv));
{% else %}    o[c] = from_f<act_t>(to_f(weight[c0 + c]) * rnd<act_t>(q * inv));
{% endif %}  }
}
