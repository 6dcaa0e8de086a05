{% include "prelude.cu" %}
{
  // One decode step of a Mamba2 mixer for {{ hpb }} whole heads of one row of a many-row step
  // (decode_rows; the arithmetic of templates/mamba_step.cu, ZAMBA2.md §3.2, §4; docs/KERNELS.md
  // "mamba_step"): causal conv + SiLU, the SSM update, the D skip and the gate y·silu(z) into an
  // f32 buffer. Why a kernel of its own: a 64-row step's `mamba_step` blocks (32 state rows of
  // one head each) ran 15.5 waves of ~3 µs latency-bound blocks at 48% of the state's byte floor
  // (docs/PERFORMANCE.md, nineteenth session). Here a block streams the state of its heads,
  // {{ hpb }}·{{ head_dim }} rows × {{ n }} columns contiguous in the slot, in tiles of {{ rpt }}
  // rows through a ring of {{ stages }} cp.async stages: each thread copies, reads, updates and
  // stores its own 16 bytes of every tile ({{ npt }} columns of one row), so no barrier guards
  // the ring, and {{ stages }} − 1 tiles are in flight behind the one being updated. The first
  // tiles are requested before the grid-dependency wait (only this kernel writes the state).
  // Block (tile = head block hb: heads hb·{{ hpb }}.., blockIdx.y = row b, state slot META_SLOT(b)).
  constexpr int HPB = {{ hpb }}, VR = HPB * {{ head_dim }}, RPT = {{ block }} / {{ tpr }};
  constexpr int NT = (VR + RPT - 1) / RPT, S = {{ stages }}, NPT = {{ npt }};
  __shared__ uint4 ring[S][{{ block }}];
  __shared__ float xs[VR], zs[VR], dts[HPB], das[HPB], dsks[HPB];
  const int h0 = tile * HPB;
  const int b = blockIdx.y;
  const int g = h0 / {{ heads_per_group }};
  const int pos = META_POS(b), slot = META_SLOT(b);
  const act_t* zx = zxbcdt + (long)b * {{ zx_stride }};
  const int t = threadIdx.x;
  // Thread t holds row t / tpr of every tile, columns q·NPT .. q·NPT + NPT − 1 (16 bytes): its
  // chunk of tile i starts NPT·t elements into the tile, so a warp's copies are contiguous.
  const int pr = t / {{ tpr }}, q = t % {{ tpr }};
  ssm_t* const sbase = ssm_state + ((long)slot * {{ heads }} + h0) * {{ head_dim }} * {{ n }};
  auto chunk = [&](int i) { return sbase + ((long)i * RPT * {{ n }} + t * NPT); };
  auto fetch = [&](int i) {
    if (i < NT) cp_async16(&ring[i % S][t], chunk(i), i * RPT + pr < VR);
    cp_async_commit();  // empty groups too: the wait below counts one group a tile
  };
#pragma unroll
  for (int i = 0; i < S - 1; ++i) fetch(i);
  // The conv channels of this block (its heads' x rows, then the group's B, then its C), and
  // everything else no launch of the step writes, before the wait as in mamba_step.
  auto x_channel = [&](int i) { return h0 * {{ head_dim }} + i; };
{% include "mamba_conv_load.cu" %}{% if norm_after %}  // The norm weight of this block's channels (`norm_after`: out_proj's planes carry w ⊙ v).
  __shared__ float normw[VR];
  for (int i = t; i < VR; i += {{ block }}) normw[i] = to_f(norm_weight[h0 * {{ head_dim }} + i]);
{% endif %}  float a_neg = 0.f, dtb = 0.f, dsk = 0.f;
  if (t < HPB) {
    a_neg = -expf(to_f(a_log[h0 + t]));
    dtb = to_f(dt_bias[h0 + t]);
    dsk = to_f(d_skip[h0 + t]);
  }
  z2c_grid_wait();
  z2c_launch_dependents();
  // After the wait every value of in_proj's output the block needs is asked for at once.
  constexpr int ZI = (VR + {{ block }} - 1) / {{ block }};
  float cur[CI], zr[ZI], dt_raw = 0.f;
#pragma unroll
  for (int ci = 0; ci < CI; ++ci) cur[ci] = t + ci * {{ block }} < VR + 2 * {{ n }} ? zxv({{ din }} + chan[ci]) : 0.f;
#pragma unroll
  for (int zi = 0; zi < ZI; ++zi) zr[zi] = t + zi * {{ block }} < VR ? zxv(h0 * {{ head_dim }} + t + zi * {{ block }}) : 0.f;
  if (t < HPB) dt_raw = zxv({{ din }} + {{ channels }} + h0 + t);
  __shared__ float bs[{{ n }}], cs[{{ n }}];
  const bool writes_bc = h0 % {{ heads_per_group }} == 0;
{% include "mamba_conv_apply.cu" %}#pragma unroll
  for (int zi = 0; zi < ZI; ++zi)
    if (t + zi * {{ block }} < VR) zs[t + zi * {{ block }}] = zr[zi];
  if (t < HPB) {
    const float dtv = softplus_f(dt_raw + dtb);
    dts[t] = dtv;
    das[t] = expf(dtv * a_neg);
    dsks[t] = dsk;
  }
  __syncthreads();
  // This thread's B and C columns are the same in every tile (one group).
  float bq[NPT], cq[NPT];
#pragma unroll
  for (int j = 0; j < NPT; ++j) {
    bq[j] = bs[q * NPT + j];
    cq[j] = cs[q * NPT + j];
  }
{% if norm_after %}  float nss = 0.f;  // Σ v² of the gated outputs this thread stores, tile by tile
{% endif %}  for (int i = 0; i < NT; ++i) {
    // Tiles 0..i have landed (S − 2 later ones may be in flight); this thread's own chunk.
    cp_async_wait<S - 2>();
    const uint4 raw = ring[i % S][t];
    const int vr = i * RPT + pr;
    const bool live = vr < VR;
    const int hl = live ? vr / {{ head_dim }} : 0;
    float sv[NPT];
    unpack16<ssm_t>(raw, sv);
    const float dA = das[hl];
    const float xv = live ? xs[vr] : 0.f;
    const float dx = dts[hl] * xv;
    float y = 0.f;
#pragma unroll
    for (int j = 0; j < NPT; ++j) {
      sv[j] = sv[j] * dA + dx * bq[j];
      y += sv[j] * cq[j];
    }
    if (live) stg16(chunk(i), pack16<ssm_t>(sv));  // one vector store (z2c_common.cuh stg16)
    // A row's {{ tpr }} threads are aligned lanes of one warp: every lane takes part.
#pragma unroll
    for (int o = {{ tpr }} / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    if (live && q == 0) {
      const float yv = rnd<act_t>(y + dsks[hl] * xv);
{% if norm_after %}      // out_proj's input planes of w ⊙ v; the row's 1 / rms(v) scales its product afterwards
      // (pair_sum's `scaled`), group_rms_norm's statistics from the same f32 values.
      const float v = yv * silu_f(zs[vr]);
      store_gemm_input(out + (long)b * {{ 2 * din }} + h0 * {{ head_dim }} + vr, {{ din }}, normw[vr] * v);
      nss += v * v;
{% else %}      out[(long)b * {{ din }} + h0 * {{ head_dim }} + vr] = yv * silu_f(zs[vr]);
{% endif %}    }
    // The slot of tile i − 1 (this thread's read of it long done: __syncwarp orders it before
    // the copy) takes tile i + S − 1.
    __syncwarp();
    fetch(i + S - 1);
  }
{% if norm_after %}  // This block's Σ v² (its {{ hpb }} heads of the row's one norm group), for the pair_sum after
  // out_proj to add in block order.
  __shared__ float scratch[32];
  const float part = block_sum(nss, scratch);
  if (t == 0) norm_ws[(long)b * {{ ws_stride }} + tile] = part;
{% endif %}}
