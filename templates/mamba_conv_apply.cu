  // (templates/mamba_conv_apply.cu, after mamba_conv_load.cu and the wait: `cur` holds
  // in_proj's values of the block's channels.) The conv + SiLU into xs, bs, cs, and this
  // position's input into the ring (x rows always, B/C only where `writes_bc`: one block a group).
#pragma unroll
  for (int ci = 0; ci < CI; ++ci) {
    const int i = threadIdx.x + ci * {{ block }};
    if (i >= VR + 2 * {{ n }}) continue;
    float acc = cb[ci];
#pragma unroll
    for (int j = 0; j + 1 < CK; ++j) acc += cw[ci][j] * old[ci][j];
    acc += cw[ci][CK - 1] * cur[ci];
    const float v = rnd<act_t>(silu_f(rnd<act_t>(acc)));
    if (i < VR) xs[i] = v;
    else if (i < VR + {{ n }}) bs[i - VR] = v;
    else cs[i - VR - {{ n }}] = v;
    if (i < VR || writes_bc) cst[(long)chan[ci] * CK + pos % CK] = from_f<act_t>(cur[ci]);
  }
