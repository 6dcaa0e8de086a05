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
  // In pass r, thread t updates virtual row t / {{ tpr }} + r·RPP, state columns {{ npt }}·(t % {{ tpr }}) + j.
  const int t = threadIdx.x;
  const int pr = t / {{ tpr }}, q = t % {{ tpr }};
  // Stored as ssm_t (`compile --state-dtype`: f32, or 16-bit rounded when stored); f32 math.
  // State column of this thread's element j. With float4 loads the groups of 4 are interleaved
  // over the row's {{ tpr }} threads, so each load instruction of a warp reads whole contiguous
  // row segments (with 16 threads a row, 4 columns each, that is the plain q·4 + j).
{% if vec4 %}  const auto col = [&](int j) { return (j / 4) * {{ 4 * tpr }} + q * 4 + (j % 4); };
{% else %}  const auto col = [&](int j) { return q * {{ npt }} + j; };
{% endif %}  // Pass r's row: whether it exists (rows past VR in the last pass do not), its head and its
  // row within the head (an inactive row reads row p0 of head h0 and stores nothing).
  bool live[NP];
  int head[NP], hrow[NP];
  float sv[NP][{{ npt }}];
  ssm_t* st[NP];
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    const int vr = pr + r * RPP;
    live[r] = vr < VR;
    head[r] = h0 + (live[r] ? vr / {{ pb }} : 0);
    hrow[r] = p0 + (live[r] ? vr % {{ pb }} : 0);
    st[r] = ssm_state + (((long)slot * {{ heads }} + head[r]) * {{ head_dim }} + hrow[r]) * {{ n }};
{% if vec4 %}    if (live[r]) {
#pragma unroll
      for (int j = 0; j < {{ npt }}; j += 4) ld4(st[r] + col(j), sv[r] + j);
    }
{% else %}#pragma unroll
    for (int j = 0; j < {{ npt }}; ++j) sv[r][j] = (live[r] && col(j) < {{ n }}) ? to_f(st[r][col(j)]) : 0.f;
{% endif %}  }
  // Everything else this block reads that no launch of the step writes goes before the wait
  // too (the conv weights, the ring's older inputs, the head's parameters), and after it the
  // three values of in_proj's output a thread needs are asked for at once, so the work after
  // the wait waits for one memory round trip, not three: 2.50 -> 2.46 ms a token
  // (docs/KERNELS.md "mamba_step", docs/PERFORMANCE.md fourteenth session).
  // This block's x rows, head by head.
  auto x_channel = [&](int i) { return (h0 + i / {{ pb }}) * {{ head_dim }} + p0 + i % {{ pb }}; };
{% include "mamba_conv_load.cu" %}  float a_neg[NP], dtb[NP], dsk[NP];
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    a_neg[r] = -expf(to_f(a_log[head[r]]));
    dtb[r] = to_f(dt_bias[head[r]]);
    dsk[r] = to_f(d_skip[head[r]]);
  }
  // Programmatic dependent launch (z2c_common.cuh): the state above is this layer's own (only
  // this kernel writes it, one step earlier), so it loads while in_proj, whose output follows,
  // finishes; the next launch (out_proj) may then come in and wait for this one.
  z2c_grid_wait();
  z2c_launch_dependents();
  float cur[CI], dt_raw[NP], zg[NP];
#pragma unroll
  for (int ci = 0; ci < CI; ++ci)
    cur[ci] = threadIdx.x + ci * {{ block }} < VR + 2 * {{ n }} ? zxv({{ din }} + chan[ci]) : 0.f;
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    dt_raw[r] = zxv({{ din }} + {{ channels }} + head[r]);
    zg[r] = zxv(head[r] * {{ head_dim }} + hrow[r]);
  }
  const bool writes_bc = (h0 % {{ heads_per_group }} == 0) && part == 0;
{% include "mamba_conv_apply.cu" %}  __syncthreads();
#pragma unroll
  for (int r = 0; r < NP; ++r) {
    const float dtv = softplus_f(dt_raw[r] + dtb[r]);
    const float dA = expf(dtv * a_neg[r]);
    const float xv = live[r] ? xs[pr + r * RPP] : 0.f;
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
    if (live[r]) {
{% if vec4 %}#pragma unroll
      for (int j = 0; j < {{ npt }}; j += 4) st4(st[r] + col(j), sv[r] + j);
{% else %}#pragma unroll
      for (int j = 0; j < {{ npt }}; ++j)
        if (col(j) < {{ n }}) st[r][col(j)] = from_f<ssm_t>(sv[r][j]);
{% endif %}    }
    // Rows are {{ tpr }} aligned lanes of one warp: every lane takes part in the shuffles.
#pragma unroll
    for (int o = {{ tpr }} / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (live[r] && q == 0) {
      const float yv = rnd<act_t>(y + dsk[r] * xv);
      out[(long)b * {{ din }} + head[r] * {{ head_dim }} + hrow[r]] = yv * silu_f(zg[r]);
    }
  }
}
