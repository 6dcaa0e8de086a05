{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k] on tensor cores ({{ wt }} weights; sm_80+ mma.sync m16n8k16,
  // f32 accumulation), with a {{ stages }}-stage cp.async pipeline: while the warps multiply
  // k-tile i, the tiles i+1 .. i+{{ stages }}-1 are in flight from global memory. Block tile
  // {{ bm }}×{{ bn }} (M×N), k-tiles of {{ bk }}; 8 warps as 2 (M) × 4 (N), each {{ bm }}/2 × 32.
  // W tiles are {{ wt }} in shared memory, read as B fragments with ldmatrix. x tiles: {% if xmode == "f32" %}f32,
  // converted to {{ wt }} pairs (cvt.rn.{{ wt }}x2) as each A fragment is built{% if split %}, split as
  // x = hi + lo (hi = bf16(x), lo = bf16(x − hi)) with both parts multiplied by the same W
  // fragment: ~16 mantissa bits kept{% endif %}{% elif xmode == "presplit" %}f32 activations split
  // beforehand (templates/split_bf16.cu: hi in columns 0..K, lo in K..2K of the same rows, x = hi
  // + lo with ~16 mantissa bits kept), both planes staged as bf16 and read with ldmatrix, each
  // multiplied by the same W fragment{% elif xmode == "f16" %}f16 (in an f16-weight plan, f32 activations rounded
  // once beforehand: templates/round_f16.cu or the norm that writes them), read with ldmatrix{% else %}bf16, read with ldmatrix{% endif %}. Codegen
  // guarantees K, both row strides and both offsets are multiples of 8 elements (whole 16-byte
  // chunks); rows past `rows`, features past N and k past K are zero-filled by cp.async.
{% if skinny is defined %}  // Split-K for steps of a few rows (docs/KERNELS.md "decode_rows"): the {{ splits }} blocks of a
  // thread-block cluster take consecutive ranges of {{ kts }} k-tiles of the same output tile, so a
  // skinny GEMM still streams its weight from enough blocks to fill the GPU; their partial tiles
  // are added through distributed shared memory in rank order (templates/mma_reduce_cluster.cu).
  // Fragments of rows past `rows` are skipped, and the first weight stages are requested before
  // waiting for the previous launch (weights are never written by a step).
{% endif %}  constexpr int BM = {{ bm }}, BN = {{ bn }}, BK = {{ bk }}, ST = {{ stages }}, NT = {{ block }};
  constexpr int MI = BM / 32;           // 16-row A fragments per warp
  constexpr int WSTR = BK + 8;          // bf16 row stride of a W tile: 80 B (BK 32) or 144 B (64), ldmatrix conflict-free
  constexpr int XSTR = BK + 8;          // row stride of an x tile (f32: 160 B, 64-bit loads conflict-free)
  constexpr int CH = BK / 8, CHS = BK == 64 ? 3 : 2;  // 16-byte chunks of bf16 in a tile row, log2
{% if xmode == "f32" %}  typedef float xs_t;
  constexpr int XPLANES = 1;
{% elif xmode == "presplit" %}  typedef unsigned short xs_t;
  constexpr int XPLANES = 2;            // hi, lo
{% else %}  typedef unsigned short xs_t;
  constexpr int XPLANES = 1;
{% endif %}  static_assert((BK == 32 || (BK == 64 && sizeof(xs_t) == 2)) && NT == 256 && BN == 128 && (BM == 32 || BM == 64 || BM == 128), "linear_mma_pipe's mapping");
  constexpr int XTILE = XPLANES * BM * XSTR, WTILE = BN * WSTR;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  xs_t* xsm = reinterpret_cast<xs_t*>(smem_raw);
  unsigned short* wsm = reinterpret_cast<unsigned short*>(smem_raw + (size_t)ST * XTILE * sizeof(xs_t));
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = (warp >> 2) * (BM / 2), wn = (warp & 3) * 32;
  const long m0 = (long)blockIdx.y * BM;
{% if skinny is defined %}  const int n0 = (tile / {{ splits }}) * BN;
{% else %}  const int n0 = tile * BN;
{% endif %}  constexpr int KT = ({{ k }} + BK - 1) / BK;
{% if skinny is defined %}#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int kt0 = (tile % {{ splits }}) * {{ kts }}, ktn = min(KT - kt0, {{ kts }});
#else
  if (tile % {{ splits }} != 0) return;  // no clusters before sm_90: the first block takes all of K
  const int kt0 = 0, ktn = KT;
#endif
{% else %}  constexpr int kt0 = 0, ktn = KT;
{% endif %}
  // Stage kt % ST: the k-tile kt0 + kt of the weight, then of x.
  auto issue_w = [&](int kt) {
    const int stage = kt % ST, k0 = (kt0 + kt) * BK;
    unsigned short* ws = wsm + stage * WTILE;
#pragma unroll
    for (int i = 0; i < (BN * BK / 8) / NT; ++i) {
      const int e = tid + i * NT, r = e >> CHS, k = k0 + (e & (CH - 1)) * 8, n = n0 + r;
      const bool ok = n < {{ n }} && k < {{ k }};
      cp_async16(ws + r * WSTR + (e & (CH - 1)) * 8, ok ? weight + (long)n * {{ w_stride }} + k : weight, ok);
    }
  };
  auto issue_x = [&](int kt) {
    const int stage = kt % ST, k0 = (kt0 + kt) * BK;
    xs_t* xt = xsm + stage * XTILE;
{% if xmode == "f32" %}#pragma unroll
    for (int e = tid; e < BM * BK / 4; e += NT) {
      const int r = e >> 3, k = k0 + (e & 7) * 4;
      const long m = m0 + r;
      const bool ok = m < rows && k < {{ k }};
      cp_async16(xt + r * XSTR + (e & 7) * 4, ok ? x + m * {{ x_stride }} + k : x, ok);
    }
{% else %}#pragma unroll
    for (int pl = 0; pl < XPLANES; ++pl) {
#pragma unroll
      for (int e = tid; e < BM * BK / 8; e += NT) {
        const int r = e >> CHS, k = k0 + (e & (CH - 1)) * 8;
        const long m = m0 + r;
        const bool ok = m < rows && k < {{ k }};
        cp_async16(xt + pl * BM * XSTR + r * XSTR + (e & (CH - 1)) * 8,
                   ok ? x + m * {{ x_stride }} + pl * {{ k }} + k : x, ok);
      }
    }
{% endif %}  };
  auto issue = [&](int kt) {
    issue_w(kt);
    issue_x(kt);
  };

  float acc[MI][4][4];
{% if dual is defined %}  // The lo plane's products in accumulators of their own, added after the loop: two independent
  // chains of tensor-core operations per output fragment instead of one.
  float acc_lo[MI][4][4];
{% endif %}#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        acc[i][j][c] = 0.f;
{% if dual is defined %}        acc_lo[i][j][c] = 0.f;
{% endif %}      }

{% if skinny is defined %}#pragma unroll
  for (int s = 0; s < ST - 1; ++s)
    if (s < ktn) issue_w(s);
  z2c_grid_wait();
  z2c_launch_dependents();
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ktn) issue_x(s);
    cp_async_commit();
  }
{% else %}#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ktn) issue(s);
    cp_async_commit();
  }
{% endif %}  for (int kt = 0; kt < ktn; ++kt) {
    cp_async_wait<ST - 2>();
    __syncthreads();  // tile kt is visible to every warp; the stage read at kt-1 is free again
    if (kt + ST - 1 < ktn) issue(kt + ST - 1);
    cp_async_commit();
    const int stage = kt % ST;
    const unsigned short* ws = wsm + stage * WTILE;
    const xs_t* xt = xsm + stage * XTILE;
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      // B fragments (PTX ISA, mma.m16n8k16 .col): lane (g, t) holds feature g, k 2t, 2t+1 and
      // 2t+8, 2t+9; ldmatrix.x4 gives two 8-feature groups at once (rows of the W tile are
      // features with k contiguous, exactly the fragment's order).
      unsigned b[4][2];
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int mat = lane >> 3, r = lane & 7;
        const unsigned short* p = ws + (wn + (2 * jj + (mat >> 1)) * 8 + r) * WSTR + ks + (mat & 1) * 8;
        ldmatrix_x4(p, b[2 * jj][0], b[2 * jj][1], b[2 * jj + 1][0], b[2 * jj + 1][1]);
      }
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        // A fragment: rows g and g+8, k 2t, 2t+1 (a0, a1) and 2t+8, 2t+9 (a2, a3).
        const int r0 = wm + i * 16;
{% if skinny is defined %}        if (m0 + r0 >= rows) continue;  // the same for the whole warp
{% endif %}{% if xmode == "f32" %}        float2 v[4];
        v[0] = *reinterpret_cast<const float2*>(xt + (r0 + g) * XSTR + ks + 2 * t);
        v[1] = *reinterpret_cast<const float2*>(xt + (r0 + g + 8) * XSTR + ks + 2 * t);
        v[2] = *reinterpret_cast<const float2*>(xt + (r0 + g) * XSTR + ks + 2 * t + 8);
        v[3] = *reinterpret_cast<const float2*>(xt + (r0 + g + 8) * XSTR + ks + 2 * t + 8);
        unsigned a[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) a[q] = cvt_{{ wt }}x2(v[q].x, v[q].y);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_{{ wt }}_16816(acc[i][j], a, b[j][0], b[j][1]);
{% if split %}#pragma unroll
        for (int q = 0; q < 4; ++q) {
          float r0f = v[q].x - __uint_as_float(a[q] << 16);
          float r1f = v[q].y - __uint_as_float(a[q] & 0xffff0000u);
          if (!(r0f == r0f)) r0f = 0.f;  // inf − inf: keep inf in hi, lo 0
          if (!(r1f == r1f)) r1f = 0.f;
          a[q] = cvt_bf16x2(r0f, r1f);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_{{ wt }}_16816(acc[i][j], a, b[j][0], b[j][1]);
{% endif %}{% elif dual is defined %}        const int mat = lane >> 3, r = lane & 7;
        unsigned a[4];
        ldmatrix_x4(xt + (r0 + (mat & 1) * 8 + r) * XSTR + ks + (mat >> 1) * 8, a[0], a[1], a[2], a[3]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_{{ wt }}_16816(acc[i][j], a, b[j][0], b[j][1]);
        ldmatrix_x4(xt + BM * XSTR + (r0 + (mat & 1) * 8 + r) * XSTR + ks + (mat >> 1) * 8, a[0], a[1], a[2],
                    a[3]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_{{ wt }}_16816(acc_lo[i][j], a, b[j][0], b[j][1]);
{% else %}        const int mat = lane >> 3, r = lane & 7;
#pragma unroll
        for (int pl = 0; pl < XPLANES; ++pl) {
          unsigned a[4];
          ldmatrix_x4(xt + pl * BM * XSTR + (r0 + (mat & 1) * 8 + r) * XSTR + ks + (mat >> 1) * 8, a[0], a[1],
                      a[2], a[3]);
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_{{ wt }}_16816(acc[i][j], a, b[j][0], b[j][1]);
        }
{% endif %}      }
    }
  }
  cp_async_wait<0>();
{% if dual is defined %}#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] += acc_lo[i][j][c];
{% endif %}
{% if skinny is defined and splits > 1 %}{% include "mma_reduce_cluster.cu" %}{% else %}{% include "mma_store.cu" %}{% endif %}}
