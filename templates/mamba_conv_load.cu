  // (templates/mamba_conv_load.cu, included by mamba_step.cu and mamba_step_pipe.cu: the
  // causal conv's loads of a block's channels, before the grid-dependency wait.) Channel i of
  // the block's xBC: its x rows (`x_channel(i)`, i < VR, the including kernel's mapping), then
  // its group's B, then its group's C; in_proj's values come later through `zxv`.
  // in_proj's value at column i; with a product pair (zx_pair > 0: the lo product zx_pair
  // columns on) the two products summed as read, the f32 add `pair_sum` would have done.
  auto zxv = [zx](int i) -> float {
{%- if zx_pair %}
    return to_f(zx[i]) + to_f(zx[i + {{ zx_pair }}]);
{%- else %}
    return to_f(zx[i]);
{%- endif %}
  };
  act_t* cst = conv_state + (long)slot * {{ channels }} * {{ k }};
{% if conv_vec %}  // Whether the conv weights and this slot's ring can be read four values a load (ld4,
  // z2c_common.cuh): a channel's 4 values start 4·size bytes apart, so the base decides.
  const bool vec_w = (reinterpret_cast<unsigned long long>(conv_weight) & (4 * sizeof(*conv_weight) - 1)) == 0;
  const bool vec_s = (reinterpret_cast<unsigned long long>(cst) & (4 * sizeof(act_t) - 1)) == 0;
{% endif %}  constexpr int CI = (VR + 2 * {{ n }} + {{ block }} - 1) / {{ block }}, CK = {{ k }};
  int chan[CI];
  float cb[CI], cw[CI][CK], old[CI][CK - 1];
#pragma unroll
  for (int ci = 0; ci < CI; ++ci) {
    const int i = threadIdx.x + ci * {{ block }};
    int c = 0;
    if (i < VR) c = x_channel(i);
    else if (i < VR + {{ n }}) c = {{ din }} + g * {{ n }} + (i - VR);
    else if (i < VR + 2 * {{ n }}) c = {{ din }} + {{ gn }} + g * {{ n }} + (i - VR - {{ n }});
    chan[ci] = c;
    cb[ci] = to_f(conv_bias[c]);
{% if conv_vec %}    // A channel's K = 4 weights and ring entries are contiguous: one load each
    // (`ZAMBA2C_TUNE_STEP_CONV_VEC=1`), where a warp's scalar loads at a stride of K touched
    // 4× the sectors they used; ring entry m holds position ≡ m (mod 4), so the older
    // positions pos − 3 .. pos − 1 are entries (pos + 1 + j) mod 4, picked without indexing
    // registers by a runtime value.
    float ring4[4];
    if (vec_w) {
      ld4(conv_weight + c * 4, cw[ci]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) cw[ci][j] = to_f(conv_weight[c * 4 + j]);
    }
    if (vec_s) {
      ld4(cst + (long)c * 4, ring4);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) ring4[j] = to_f(cst[(long)c * 4 + j]);
    }
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int m = (pos + 1 + j) & 3;
      old[ci][j] = m == 0 ? ring4[0] : m == 1 ? ring4[1] : m == 2 ? ring4[2] : ring4[3];
    }
{% else %}#pragma unroll
    for (int j = 0; j < CK; ++j) cw[ci][j] = to_f(conv_weight[c * CK + j]);
#pragma unroll
    for (int j = 0; j + 1 < CK; ++j) {
      const int qq = pos - (CK - 1) + j;  // older positions, oldest first
      old[ci][j] = to_f(cst[(long)c * CK + ((qq % CK) + CK) % CK]);
    }
{% endif %}  }
