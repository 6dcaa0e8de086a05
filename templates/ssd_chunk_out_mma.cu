{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 3 of 3, on tensor cores (docs/KERNELS.md "ssd"): the sums of
  // templates/ssd_chunk_out.cu per (head, chunk, sequence),
  //   y_t[p] = Σ_{s≤t} G[t][s] x_s[p] + exp(cs_t) Σ_n C_t[n] S[n][p] + D x_t[p],
  //   G[t][s] = (C_t·B_s) exp(cs_t − cs_s) dt_s  (s ≤ t),
  // as three products in 3xBF16 mma.sync (z2c_common.cuh warp_mma_3xbf16: each f32 operand held
  // as bf16 hi and lo planes, ~16 significant bits, f32 accumulation). Warp w owns rows
  // 16·(w % 4).. and the column half w / 4 of G and of y. The operands are split into their
  // planes once, as they are staged; G takes B's place once made.
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int NT = {{ block }};
  static_assert(L == 64 && NT == 256 && P % 32 == 0 && N % 16 == 0, "8 warps: 4 row tiles × 2 halves");
  // Plane pitches in elements: rows of 16·(odd) bytes keep ldmatrix free of bank conflicts.
  constexpr int LDN = N + 8, LDP = P + 8, LDL = L + 8;
  // One plane's elements (the lo plane follows its hi plane): C, B-then-G, x, the state.
  constexpr int CPL = L * LDN, BPL = L * LDN > L * LDL ? L * LDN : L * LDL, XPL = L * LDP, SPL = N * LDP;
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, tq = lane & 3;
  extern __shared__ __align__(16) float smem[];
  float* cs = smem;                                                  // [L]
  float* dv = cs + L;                                                // [L]
  unsigned short* cpl = reinterpret_cast<unsigned short*>(dv + L);  // [L][LDN]: C_t[n]
  unsigned short* bpl = cpl + 2 * CPL;                               // [L][LDN]: B_s[n]
  unsigned short* gpl = bpl;                                         // [L][LDL]: G, row t, column s
  unsigned short* xpl = bpl + 2 * BPL;                               // [L][LDP]: x_s[p]
  unsigned short* spl = xpl + 2 * XPL;                               // [N][LDP]: S[n][p]

  // dt and cs of each token (step 1's `ws`); C, B and x of the chunk's rows (zero past lc) and
  // the state entering the chunk (step 2's `chunks`, [n][p]): every load issued, then split.
  for (int s = tid; s < L; s += NT) {
    const bool in = s < lc;
    dv[s] = in ? ws[(row0 + s) * (2 * H) + h] : 0.f;
    cs[s] = in ? ws[(row0 + s) * (2 * H) + H + h] : 0.f;
  }
  {
    Tile<L, N, NT> ct, bt;
    Tile<L, P, NT> xt;
    Tile<N, P, NT> st;
    ct.load(cm + row0 * {{ c_stride }} + g * N, {{ c_stride }}, lc);
    bt.load(bm + row0 * {{ b_stride }} + g * N, {{ b_stride }}, lc);
    xt.load(x + row0 * {{ x_stride }} + h * P, {{ x_stride }}, lc);
    st.load(chunks + (((long)b * gridDim.y + c) * H + h) * (P * N), P, N);
    ct.store_split(cpl, LDN, CPL);
    bt.store_split(bpl, LDN, BPL);
    xt.store_split(xpl, LDP, XPL);
    st.store_split(spl, LDP, SPL);
  }
  __syncthreads();

  const int mr = 16 * (warp & 3), half = warp >> 2;
  {
    // G = C·Bᵀ (B(k = n, column s) is B_s[n]); a half wholly above the diagonal is zero.
    const int s0 = half * (L / 2);
    float acc[L / 16][4] = {};
    if (s0 <= mr + 15)
      warp_mma_3xbf16<L / 16, false, false>(acc, cpl + mr * LDN, LDN, CPL, bpl + s0 * LDN, LDN, BPL, 0, N);
    __syncthreads();  // every warp has read B: G takes its place
#pragma unroll
    for (int j = 0; j < L / 16; ++j)
#pragma unroll
      for (int i = 0; i < 4; i += 2) {
        const int t = mr + gq + 4 * i, s = s0 + 8 * j + 2 * tq;
        const float g0 = (s <= t && t < lc) ? acc[j][i] * expf(cs[t] - cs[s]) * dv[s] : 0.f;
        const float g1 = (s + 1 <= t && t < lc) ? acc[j][i + 1] * expf(cs[t] - cs[s + 1]) * dv[s + 1] : 0.f;
        unsigned hi, lo;
        split_bf16x2(g0, g1, hi, lo);
        *reinterpret_cast<unsigned*>(gpl + t * LDL + s) = hi;
        *reinterpret_cast<unsigned*>(gpl + BPL + t * LDL + s) = lo;
      }
  }
  __syncthreads();

  const int p0 = half * (P / 2);
  float acc[P / 16][4] = {};
  // From the state entering the chunk: exp(cs_t) C_t · S[·][p].
  warp_mma_3xbf16<P / 16, false, true>(acc, cpl + mr * LDN, LDN, CPL, spl + p0, LDP, SPL, 0, N);
  const float e0 = expf(cs[mr + gq]), e1 = expf(cs[mr + gq + 8]);
#pragma unroll
  for (int j = 0; j < P / 16; ++j) {
    acc[j][0] *= e0; acc[j][1] *= e0;
    acc[j][2] *= e1; acc[j][3] *= e1;
  }
  // Inside the chunk: Σ_{s≤t} G[t][s] x_s (G is zero past the warp's last row).
  warp_mma_3xbf16<P / 16, false, true>(acc, gpl + mr * LDL, LDL, BPL, xpl + p0, LDP, XPL, 0, mr + 16);
  // D x_t from x itself (f32 where the activations are), not from its planes; every value of
  // x read before the first store (the compiler cannot tell `out` from `x`: each read would
  // otherwise wait for the store before it).
  const float Dh = to_f(d_skip[h]);
{% if pair_io %}  // A thread's two adjacent columns p, p + 1 as one 8-byte (f32) or 4-byte access: Nsight
  // Compute counted the scalar pair as two requests for one sector (docs/PERFORMANCE.md,
  // twenty-second session, call D). `pair_io`: x and out start and stride on even elements.
  float xv[P / 16][2][2];
#pragma unroll
  for (int j = 0; j < P / 16; ++j)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = mr + gq + 8 * r, p = p0 + 8 * j + 2 * tq;
      xv[j][r][0] = xv[j][r][1] = 0.f;
      if (t < lc) ld2(x + (row0 + t) * {{ x_stride }} + h * P + p, xv[j][r]);
    }
#pragma unroll
  for (int j = 0; j < P / 16; ++j)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = mr + gq + 8 * r, p = p0 + 8 * j + 2 * tq;
      const float v[2] = {acc[j][2 * r] + Dh * xv[j][r][0], acc[j][2 * r + 1] + Dh * xv[j][r][1]};
      if (t < lc) st2(out + (row0 + t) * {{ out_stride }} + h * P + p, v);
    }
{% else %}  float xv[P / 16][4];
#pragma unroll
  for (int j = 0; j < P / 16; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = mr + gq + 8 * (i >> 1), p = p0 + 8 * j + 2 * tq + (i & 1);
      xv[j][i] = t < lc ? to_f(x[(row0 + t) * {{ x_stride }} + h * P + p]) : 0.f;
    }
#pragma unroll
  for (int j = 0; j < P / 16; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = mr + gq + 8 * (i >> 1), p = p0 + 8 * j + 2 * tq + (i & 1);
      if (t < lc) out[(row0 + t) * {{ out_stride }} + h * P + p] = from_f<act_t>(acc[j][i] + Dh * xv[j][i]);
    }
{% endif %}}
