{% include "prelude.cu" %}
{
  // One decode step of a Mamba2 mixer between in_proj and out_proj (ZAMBA2.md §3.2, §4;
  // docs/KERNELS.md "mamba_step"): causal conv + SiLU of the channels this block needs, the SSM
  // update of {{ pb }} rows of {{ hpb }} head(s) (f32 math), the D skip and the gate y·silu(z). The
  // gated output goes to an f32 buffer; out_proj's kernel applies the group norm in its prologue.
  // Block (tile = hb·{{ psplit }} + part: heads hb·{{ hpb }}.., rows part·{{ pb }}..; blockIdx.y = row b of
  // the batch, state slot META_SLOT(b)). The conv state is a ring of the last {{ k }} inputs:
  // position q lives in slot q mod {{ k }}, so this step reads only slots of older positions and
  // writes only the slot of the current one: blocks sharing the B/C channels never race, and
  // exactly one block per group writes those channels' slot.
  // The block's {{ hpb }}·{{ pb }} state rows ("virtual rows" vr: head h0 + vr / {{ pb }}, row p0 + vr % {{ pb }})
  // go in {{ passes }} pass(es) of {{ block }} / {{ tpr }} rows; every pass's state is loaded before the wait,
  // so a block has all its state bytes in flight at once, and the group's B/C conv is computed
  // once for its {{ hpb }} head(s).
  constexpr int HPB = {{ hpb }}, NP = {{ passes }}, RPP = {{ block }} / {{ tpr }}, VR = HPB * {{ pb }};
  __shared__ float xs[VR], bs[{{ n }}], cs[{{ n }}];
  const int hb = tile / {{ psplit }}, part = tile % {{ psplit }};
  const int h0 = hb * HPB;
  const int b = blockIdx.y;
  const int g = h0 / {{ heads_per_group }};
  const int p0 = part * {{ pb }};
  const int pos = META_POS(b), slot = META_SLOT(b);
  const act_t* zx = zxbcdt + (long)b * {{ zx_stride }};
  act_t* cst = conv_state + (long)slot * {{ channels }} * {{ k }};
  // In pass r, thread t updates virtual row t / {{ tpr }} + r·RPP, state columns {{ npt }}·(t % {{ tpr }}) + j.
  const int t = threadIdx.x;
  const int pr = t / {{ tpr }}, q = t % {{ tpr }};
  // Stored as ssm_t (`compile --state-dtype`: f32, or 16-bit rounded when stored); f32 math.
  // State column of this thread's element j. With float4 loads the groups of 4 are interleaved
  // over the row's {{ tpr }} threads, so each load instruction of a warp reads whole contiguous
  // row segments (with 16 threads a row, 4 columns each, that is the plain q·4 + j).
{% if vec4 %}  const auto col = [&](int j) { return (j / 4) * {{ 4 * tpr }} + q * 4 + (j % 4); };
{% else %}  const auto col = [&](int j) { return q * {{ npt }} + j; };
{% endif %}  float sv[NP][{{ npt }}];
  ssm_t* st[NP];
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    const int vr = pr + r * RPP;
    const bool active = vr < VR;
    const int hh = h0 + (active ? vr / {{ pb }} : 0), p = p0 + (active ? vr % {{ pb }} : 0);
    st[r] = ssm_state + (((long)slot * {{ heads }} + hh) * {{ head_dim }} + p) * {{ n }};
{% if vec4 %}    if (active) {
#pragma unroll
      for (int j = 0; j < {{ npt }}; j += 4) ld4(st[r] + col(j), sv[r] + j);
    }
{% else %}#pragma unroll
    for (int j = 0; j < {{ npt }}; ++j) sv[r][j] = (active && col(j) < {{ n }}) ? to_f(st[r][col(j)]) : 0.f;
{% endif %}  }
  // Programmatic dependent launch (z2c_common.cuh): the state above is this layer's own (only
  // this kernel writes it, one step earlier), so it loads while in_proj, whose output follows,
  // finishes; the next launch (out_proj) may then come in and wait for this one.
  z2c_grid_wait();
  z2c_launch_dependents();
  const bool writes_bc = (h0 % {{ heads_per_group }} == 0) && part == 0;
  for (int i = threadIdx.x; i < VR + 2 * {{ n }}; i += blockDim.x) {
    // Channel of xBC: this block's x rows (head by head), then its group's B, then its group's C.
    int c;
    if (i < VR) c = (h0 + i / {{ pb }}) * {{ head_dim }} + p0 + i % {{ pb }};
    else if (i < VR + {{ n }}) c = {{ din }} + g * {{ n }} + (i - VR);
    else c = {{ din }} + {{ gn }} + g * {{ n }} + (i - VR - {{ n }});
    const float cur = to_f(zx[{{ din }} + c]);
    float acc = to_f(conv_bias[c]);
#pragma unroll
    for (int j = 0; j + 1 < {{ k }}; ++j) {
      const int qq = pos - ({{ k }} - 1) + j;  // older positions, oldest first
      acc += to_f(conv_weight[c * {{ k }} + j]) * to_f(cst[(long)c * {{ k }} + ((qq % {{ k }}) + {{ k }}) % {{ k }}]);
    }
    acc += to_f(conv_weight[c * {{ k }} + {{ k }} - 1]) * cur;
    const float v = rnd<act_t>(silu_f(rnd<act_t>(acc)));
    if (i < VR) xs[i] = v;
    else if (i < VR + {{ n }}) bs[i - VR] = v;
    else cs[i - VR - {{ n }}] = v;
    if (i < VR || writes_bc) cst[(long)c * {{ k }} + pos % {{ k }}] = from_f<act_t>(cur);
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    const int vr = pr + r * RPP;
    const bool active = vr < VR;
    const int hh = h0 + (active ? vr / {{ pb }} : 0), p = p0 + (active ? vr % {{ pb }} : 0);
    const float A = -expf(to_f(a_log[hh]));
    const float dtv = softplus_f(to_f(zx[{{ din }} + {{ channels }} + hh]) + to_f(dt_bias[hh]));
    const float dA = expf(dtv * A);
    const float xv = active ? xs[vr] : 0.f;
    const float dx = dtv * xv;
    float y = 0.f;
#pragma unroll
    for (int j = 0; j < {{ npt }}; ++j) {
      const int nn = col(j);
      if (nn < {{ n }}) {
        sv[r][j] = sv[r][j] * dA + dx * bs[nn];
        y += sv[r][j] * cs[nn];
      }
    }
    if (active) {
{% if vec4 %}#pragma unroll
      for (int j = 0; j < {{ npt }}; j += 4) st4(st[r] + col(j), sv[r] + j);
{% else %}#pragma unroll
      for (int j = 0; j < {{ npt }}; ++j)
        if (col(j) < {{ n }}) st[r][col(j)] = from_f<ssm_t>(sv[r][j]);
{% endif %}    }
    // Rows are {{ tpr }} aligned lanes of one warp: every lane takes part in the shuffles.
#pragma unroll
    for (int o = {{ tpr }} / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (active && q == 0) {
      const float yv = rnd<act_t>(y + to_f(d_skip[hh]) * xv);
      out[(long)b * {{ din }} + hh * {{ head_dim }} + p] = yv * silu_f(to_f(zx[hh * {{ head_dim }} + p]));
    }
  }
}
