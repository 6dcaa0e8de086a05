  // The body of rms_norm, gated_rms_norm and group_rms_norm (docs/KERNELS.md "Norms"): channels
  // c0 .. c0 + {{ count }} of row r, read from `src` at src_off (gated: times silu of z at z_off),
  // f32 statistics, written as w ⊙ cast(v / sqrt(mean(v²) + eps)) from column c0 of the output.
  __shared__ float scratch[32];
{% if count <= block * 32 %}  // Thread t holds channels t + i·{{ block }}: all its loads (values{% if gated %}, gates{% endif %} and weights, kept in
  // registers) are issued before the first use, since a loop that stored into `out` as it went
  // waited for each load in turn (the compiler must assume `out` aliases them); then summed in
  // channel order as that loop did, so the statistics and outputs are the same to the bit.
  constexpr int PT = ({{ count }} + {{ block }} - 1) / {{ block }};
  float xv[PT], wv[PT];
{% if gated %}  float zv[PT];
{% endif %}#pragma unroll
  for (int i = 0; i < PT; ++i) {
    const int c = threadIdx.x + i * {{ block }};
    xv[i] = c < {{ count }} ? {% if two is defined and two %}src_at(c){% else %}to_f(src[src_off + c]){% endif %} : 0.f;
{% if gated %}    zv[i] = c < {{ count }} ? to_f(z[z_off + c]) : 0.f;
{% endif %}  }
{% if gated %}#pragma unroll
  for (int i = 0; i < PT; ++i) xv[i] *= silu_f(zv[i]);  // gate before norm
{% endif %}#pragma unroll
  for (int i = 0; i < PT; ++i) {
    const int c = threadIdx.x + i * {{ block }};
    wv[i] = c < {{ count }} ? to_f(weight[c0 + c]) : 0.f;
  }
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < PT; ++i) ss += xv[i] * xv[i];
{% else %}  float ss = 0.f;
  for (int c = threadIdx.x; c < {{ count }}; c += blockDim.x) {
    const float v = {% if two is defined and two %}src_at(c){% else %}to_f(src[src_off + c]){% endif %}{% if gated %} * silu_f(to_f(z[z_off + c])){% endif %};
    ss += v * v;
  }
{% endif %}  ss = block_sum(ss, scratch);
  const float inv = 1.f / sqrtf(ss / {{ count }}.f + {{ eps }});
{% if split %}  // With `split`, written as the input planes its GEMMs read (store_gemm_input: bf16 hi and lo as
  // templates/split_bf16.cu splits, or one f16 plane in an f16-weight plan).
  auto* o = out + r * {{ planes * width }} + c0;
{% else %}  act_t* o = out + r * {{ width }} + c0;
{% endif %}{% if count <= block * 32 %}#pragma unroll
  for (int i = 0; i < PT; ++i) {
    const int c = threadIdx.x + i * {{ block }};
    if (c >= {{ count }}) continue;
    const float v = xv[i], w = wv[i];
{% else %}  for (int c = threadIdx.x; c < {{ count }}; c += blockDim.x) {
    const float v = {% if two is defined and two %}src_at(c){% else %}to_f(src[src_off + c]){% endif %}{% if gated %} * silu_f(to_f(z[z_off + c])){% endif %}, w = to_f(weight[c0 + c]);
{% endif %}{% if split %}    store_gemm_input(o + c, {{ width }}, w * rnd<act_t>(v * inv));
{% else %}    o[c] = from_f<act_t>(w * rnd<act_t>(v * inv));
{% endif %}  }
