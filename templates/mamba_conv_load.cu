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
  constexpr int CI = (VR + 2 * {{ n }} + {{ block }} - 1) / {{ block }}, CK = {{ k }};
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
#pragma unroll
    for (int j = 0; j < CK; ++j) cw[ci][j] = to_f(conv_weight[c * CK + j]);
#pragma unroll
    for (int j = 0; j + 1 < CK; ++j) {
      const int qq = pos - (CK - 1) + j;  // older positions, oldest first
      old[ci][j] = to_f(cst[(long)c * CK + ((qq % CK) + CK) % CK]);
    }
  }
