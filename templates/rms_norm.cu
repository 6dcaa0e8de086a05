{% include "prelude.cu" %}
{
  // w ⊙ cast(x / sqrt(mean(x²) + eps)), statistics in f32 (ZAMBA2.md §2.6, §6.1b).
  __shared__ float scratch[32];
  const long r = tile;
  const long xo = r * {{ x_stride }};
  float ss = 0.f;
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x) {
    const float v = to_f(x[xo + c]);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.f / sqrtf(ss / {{ width }}.f + {{ eps }});
{% if split %}  // With `split`, written as the bf16 hi and lo planes its GEMMs read (templates/split_bf16.cu).
  bf16_t* o = out + r * {{ 2 * width }};
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x)
    store_split_bf16(o + c, {{ width }}, to_f(weight[c]) * rnd<act_t>(to_f(x[xo + c]) * inv));
{% else %}  act_t* o = out + r * {{ width }};
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x)
    o[c] = from_f<act_t>(to_f(weight[c]) * rnd<act_t>(to_f(x[xo + c]) * inv));
{% endif %}}
