{% include "prelude.cu" %}
{
  // One decode step of a Mamba2 mixer between in_proj and out_proj (ZAMBA2.md §3.2, §4;
  // docs/KERNELS.md "mamba_step"): causal conv + SiLU of the channels this block needs, the SSM
  // update of {{ pb }} rows of head h (f32 state), the D skip and the gate y·silu(z). The gated
  // output goes to an f32 buffer; out_proj's kernel applies the group norm in its prologue.
  // Block (tile = h·{{ psplit }} + part, blockIdx.y = row b of the batch, state slot META_SLOT(b)). The conv state is a ring of the
  // last {{ k }} inputs: position q lives in slot q mod {{ k }}, so this step reads only slots of
  // older positions and writes only the slot of the current one: blocks sharing the B/C
  // channels never race, and exactly one block per group writes those channels' slot.
  __shared__ float xs[{{ pb }}], bs[{{ n }}], cs[{{ n }}];
  const int h = tile / {{ psplit }}, part = tile % {{ psplit }};
  const int b = blockIdx.y;
  const int g = h / {{ heads_per_group }};
  const int p0 = part * {{ pb }};
  const int pos = META_POS(b), slot = META_SLOT(b);
  const act_t* zx = zxbcdt + (long)b * {{ zx_stride }};
  act_t* cst = conv_state + (long)slot * {{ channels }} * {{ k }};
  // Thread t updates row p0 + t / {{ tpr }}, state columns {{ npt }}·(t % {{ tpr }}) + j. Its state
  // is loaded first: those loads do not wait for the conv below.
  const int t = threadIdx.x;
  const int pr = t / {{ tpr }}, q = t % {{ tpr }};
  const bool active = pr < {{ pb }};
  const int p = p0 + (active ? pr : 0);
  // Stored as ssm_t (`compile --state-dtype`: f32, or 16-bit rounded when stored); f32 math.
  ssm_t* st = ssm_state + (((long)slot * {{ heads }} + h) * {{ head_dim }} + p) * {{ n }};
  // State column of this thread's element j. With float4 loads the groups of 4 are interleaved
  // over the row's {{ tpr }} threads, so each load instruction of a warp reads whole contiguous
  // row segments (with 16 threads a row, 4 columns each, that is the plain q·4 + j).
{% if vec4 %}  const auto col = [&](int j) { return (j / 4) * {{ 4 * tpr }} + q * 4 + (j % 4); };
{% else %}  const auto col = [&](int j) { return q * {{ npt }} + j; };
{% endif %}  float sv[{{ npt }}];
{% if vec4 %}  if (active) {
#pragma unroll
    for (int j = 0; j < {{ npt }}; j += 4) ld4(st + col(j), sv + j);
  }
{% else %}#pragma unroll
  for (int j = 0; j < {{ npt }}; ++j) sv[j] = (active && col(j) < {{ n }}) ? to_f(st[col(j)]) : 0.f;
{% endif %}  const float A = -expf(to_f(a_log[h]));
  // Programmatic dependent launch (z2c_common.cuh): the state above is this layer's own (only
  // this kernel writes it, one step earlier), so it loads while in_proj, whose output follows,
  // finishes; the next launch (out_proj) may then come in and wait for this one.
  z2c_grid_wait();
  z2c_launch_dependents();
  const float dtv = softplus_f(to_f(zx[{{ din }} + {{ channels }} + h]) + to_f(dt_bias[h]));
  const float Dh = to_f(d_skip[h]);
  const float zv = to_f(zx[h * {{ head_dim }} + p]);
  const bool writes_bc = (h % {{ heads_per_group }} == 0) && part == 0;
  for (int i = threadIdx.x; i < {{ pb }} + 2 * {{ n }}; i += blockDim.x) {
    // Channel of xBC: this block's x rows, then its group's B, then its group's C.
    int c;
    if (i < {{ pb }}) c = h * {{ head_dim }} + p0 + i;
    else if (i < {{ pb }} + {{ n }}) c = {{ din }} + g * {{ n }} + (i - {{ pb }});
    else c = {{ din }} + {{ gn }} + g * {{ n }} + (i - {{ pb }} - {{ n }});
    const float cur = to_f(zx[{{ din }} + c]);
    float acc = to_f(conv_bias[c]);
#pragma unroll
    for (int j = 0; j + 1 < {{ k }}; ++j) {
      const int qq = pos - ({{ k }} - 1) + j;  // older positions, oldest first
      acc += to_f(conv_weight[c * {{ k }} + j]) * to_f(cst[(long)c * {{ k }} + ((qq % {{ k }}) + {{ k }}) % {{ k }}]);
    }
    acc += to_f(conv_weight[c * {{ k }} + {{ k }} - 1]) * cur;
    const float v = rnd<act_t>(silu_f(rnd<act_t>(acc)));
    if (i < {{ pb }}) xs[i] = v;
    else if (i < {{ pb }} + {{ n }}) bs[i - {{ pb }}] = v;
    else cs[i - {{ pb }} - {{ n }}] = v;
    if (i < {{ pb }} || writes_bc) cst[(long)c * {{ k }} + pos % {{ k }}] = from_f<act_t>(cur);
  }
  __syncthreads();
  const float dA = expf(dtv * A);
  const float xv = active ? xs[pr] : 0.f;
  const float dx = dtv * xv;
  float y = 0.f;
#pragma unroll
  for (int j = 0; j < {{ npt }}; ++j) {
    const int nn = col(j);
    if (nn < {{ n }}) {
      sv[j] = sv[j] * dA + dx * bs[nn];
      y += sv[j] * cs[nn];
    }
  }
  if (active) {
{% if vec4 %}#pragma unroll
    for (int j = 0; j < {{ npt }}; j += 4) st4(st + col(j), sv + j);
{% else %}#pragma unroll
    for (int j = 0; j < {{ npt }}; ++j)
      if (col(j) < {{ n }}) st[col(j)] = from_f<ssm_t>(sv[j]);
{% endif %}  }
  // Rows are {{ tpr }} aligned lanes of one warp: every lane takes part in the shuffles.
#pragma unroll
  for (int o = {{ tpr }} / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
  if (active && q == 0) {
    const float yv = rnd<act_t>(y + Dh * xv);
    out[(long)b * {{ din }} + h * {{ head_dim }} + p] = yv * silu_f(zv);
  }
}
