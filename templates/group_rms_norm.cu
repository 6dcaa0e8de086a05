{% include "prelude.cu" %}
{
  // w ⊙ groupnorm(x), f32 math: the gated norm of a Mamba2 mixer (ZAMBA2.md §3.2, §6.7) on a
  // gate already applied (mamba_step's f32 output y·silu(z)), so the same rounding as
  // templates/gated_rms_norm.cu. One block per (row, group of {{ group }} channels).
  __shared__ float scratch[32];
  const long r = tile;
  const int c0 = blockIdx.y * {{ group }};
  const long xo = r * {{ x_stride }} + c0;
  float ss = 0.f;
  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x) {
    const float q = to_f(x[xo + c]);
    ss += q * q;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.f / sqrtf(ss / {{ group }}.f + {{ eps }});
{% if split %}  // With `split`, written as the bf16 hi and lo planes its GEMMs read (templates/split_bf16.cu).
  bf16_t* o = out + r * {{ 2 * width }} + c0;
  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x)
    store_split_bf16(o + c, {{ width }}, to_f(weight[c0 + c]) * rnd<act_t>(to_f(x[xo + c]) * inv));
{% else %}  act_t* o = out + r * {{ width }} + c0;
  for (int c = threadIdx.x; c < {{ group }}; c += blockDim.x)
    o[c] = from_f<act_t>(to_f(weight[c0 + c]) * rnd<act_t>(to_f(x[xo + c]) * inv));
{% endif %}}
