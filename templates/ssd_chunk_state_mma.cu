{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 1 of 3, on tensor cores (docs/KERNELS.md "ssd"): what
  // templates/ssd_chunk_state.cu computes per (head, chunk of {{ l }} tokens, sequence), dt and
  // cs into `ws` and the chunk's own state contribution into `chunks` ([n][p]),
  //   Sc[n][p] = Σ_s B_s[n] · w_s x_s[p],  w_s = exp(cs_last − cs_s) · dt_s,
  // here as one {{ d_state }}×L-by-L×{{ head_dim }} product in 3xBF16 mma.sync (z2c_common.cuh
  // warp_mma_3xbf16: bf16 hi and lo planes, ~16 significant bits, f32 accumulation). x and B
  // are loaded first (they do not wait for dt); x is scaled by w_s as it is split into planes.
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int NT = {{ block }};
  static_assert(L % 16 == 0 && NT == 256 && N % 16 == 0 && P % 32 == 0, "8 warps: row tiles × 2 halves");
  constexpr int LDN = N + 8, LDP = P + 8;  // plane pitches: ldmatrix free of bank conflicts
  constexpr int BPL = L * LDN, XPL = L * LDP;
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, tq = lane & 3;
  __shared__ float dv[L], av[L], w[L];
  __shared__ __align__(16) unsigned short bpl[2 * BPL];  // [L][LDN]: B_s[n], hi then lo
  __shared__ __align__(16) unsigned short xpl[2 * XPL];  // [L][LDP]: w_s x_s[p], hi then lo
  Tile<L, P, NT> xt;
  Tile<L, N, NT> bt;
  xt.load(x + row0 * {{ x_stride }} + h * P, {{ x_stride }}, lc);
  bt.load(bm + row0 * {{ b_stride }} + g * N, {{ b_stride }}, lc);
  bt.store_split(bpl, LDN, BPL);
{% include "ssd_chunk_weights.cu" %}
  xt.store_split(xpl, LDP, XPL, w);  // w is zero past lc, as x is
  __syncthreads();
  // Sc = Bᵀ · (w x): A(n, k = s) is B_s[n] (planes [s][n]), B(s, p) is (w x)_s[p]; rows past lc
  // are zero.
  float* dst = chunks + (((long)b * gridDim.y + c) * H + h) * (P * N);
  const int p0 = (warp >> 2) * (P / 2), k1 = (lc + 15) & ~15;
  for (int mr = 16 * (warp & 3); mr < N; mr += 64) {
    float acc[P / 16][4] = {};
    warp_mma_3xbf16<P / 16, true, true>(acc, bpl + mr, LDN, BPL, xpl + p0, LDP, XPL, 0, k1);
#pragma unroll
    for (int j = 0; j < P / 16; ++j)
#pragma unroll
      for (int i = 0; i < 4; i += 2)
        *reinterpret_cast<float2*>(dst + (mr + gq + 4 * i) * P + p0 + 8 * j + 2 * tq) =
            make_float2(acc[j][i], acc[j][i + 1]);
  }
}
