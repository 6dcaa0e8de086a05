{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k] for a decode step of up to 64 rows per blockIdx.y
  // (docs/KERNELS.md "linear_rows"): the weights go from global memory straight into mma.sync
  // B fragments, each 16-byte load used once, no shared-memory staging. Lane (g, t) = (lane / 4,
  // lane % 4) loads W[n0 + 8j + g][k0 + 8t .. k0 + 8t + 8] for its warp's {{ ntw }} n-tiles j: eight
  // k values that serve two m16n8k16 steps, because the k order inside a 32-wide chunk is
  // permuted alike for x and W (a sum does not care): step 1 takes k 8t+0..3 (the fragment's
  // slots 2t, 2t+1, 2t+8, 2t+9), step 2 takes k 8t+4..7. The x fragment is then rows g and g + 8
  // at the same 16 bytes.
  // x goes through shared memory: the block walks its k range in stages of {{ wk }} chunks (one
  // per k warp), each stage's x (every row of the step, {{ planes }} plane(s)) copied with
  // cp.async {{ xstages }} - 1 stages ahead, so every warp reads x at shared-memory latency and the
  // block reads each x byte from L2 once (the first version read x from L1 in each warp and,
  // at 64 rows, ran at 14% of the weights' floor: docs/PERFORMANCE.md, tenth session).
  // {% if planes == 2 %}x is two bf16 planes (hi in columns 0..K, lo in K..2K; x = hi + lo, ~16
  // mantissa bits), both multiplied by the same W fragment{% else %}x is one {{ wt }} plane{% endif %}.
  // Block: {{ wn }} × {{ wk }} warps (features × k); each warp owns {{ ntw }}·8 features and every
  // {{ wk }}-th 32-wide k chunk of the block's k range; the {{ splits }} block(s) of a cluster take
  // consecutive k ranges. Partial tiles are parked in shared memory and summed in a fixed order
  // (cluster rank, then warp), so a row's result never depends on the other rows of the step:
  // the same sequence gives the same bits alone or in any batch.
  constexpr int NTW = {{ ntw }}, WN = {{ wn }}, WK = {{ wk }}, S = {{ splits }}, PL = {{ planes }};
  constexpr int BNB = WN * NTW * 8;                  // features per block
  constexpr int KC = ({{ k }} + 31) / 32;            // 32-wide k chunks{% if k_tail %}; the last one partly past K (zeros){% endif %}
  constexpr int KCS = (KC + S - 1) / S;              // chunks per split
  constexpr int RSTR = BNB + 4;                      // f32 row stride of a parked partial tile
  constexpr int XST = {{ xstages }};                  // x stages in shared memory
  constexpr int XCH = PL * 64 * 32;                  // x of one chunk: [plane][row][32 k]
  static_assert(WN * WK * 32 == {{ block }} && BNB % 4 == 0 && XST >= 2, "linear_rows' mapping");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  x_t* xs = reinterpret_cast<x_t*>(smem_raw);        // [XST][WK][XCH]: the x stages
  float* red = reinterpret_cast<float*>(smem_raw);   // [WK][64][RSTR], after the k loop (over xs)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wn = warp % WN, wk = warp / WN;
  const long m0 = (long)blockIdx.y * 64;
  // The {{ splits }} blocks of a cluster split k (sm_90; before it, the first block takes all of K).
{% if splits > 1 %}#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define Z2C_ROWS_CLUSTER
#endif
{% endif %}#ifdef Z2C_ROWS_CLUSTER
  const int rank = tile % S;
  const int c0e = rank * KCS, c1e = min(KC, c0e + KCS);
#else
  if (S > 1 && tile % S != 0) return;
  const int rank = 0, c0e = 0, c1e = KC;
#endif
  const int n0 = (tile / S) * BNB + wn * NTW * 8;
  // Weight rows of this lane: feature n0 + 8j + g (features past N re-read row 0, never stored).
  const w_t* wrow[NTW];
#pragma unroll
  for (int j = 0; j < NTW; ++j) {
    const int n = n0 + 8 * j + g;
    wrow[j] = weight + (long)(n < {{ n }} ? n : 0) * {{ w_stride }} + 8 * t;
  }
  const int mrows = rows - m0 < 64 ? (int)(rows - m0) : 64;
  const int mt_n = (mrows + 15) / 16;  // m16 tiles holding rows of this step (warp-uniform)
  float acc[4][NTW][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;
  // Weights of AH chunks ahead in flight (`ZAMBA2C_TUNE_ROWS_AHEAD`): wq[0] is the chunk being
  // multiplied, wq[1..AH] the next ones. The first AH are requested before waiting for the
  // previous launch (a step never writes weights); x is the previous launch's output.
  constexpr int AH = {{ ahead }};
  const int nst = (c1e - c0e + WK - 1) / WK;  // stages of this block (block-uniform)
  uint4 wq[AH + 1][NTW];
  auto load_chunk = [&](uint4 (&dst)[NTW], int cc) {
#pragma unroll
    for (int j = 0; j < NTW; ++j)
      dst[j] = cc < c1e{% if k_tail %} && cc * 32 + 8 * t < {{ k }}{% endif %} ? ld_stream16(wrow[j] + (long)cc * 32) : make_uint4(0u, 0u, 0u, 0u);
  };
  // Stage st's x into its buffer: for each of the WK chunks, plane and row of the step, the
  // chunk's 64 bytes as four 16-byte copies (zeros past the block's k range{% if k_tail %} or K{% endif %}). Rows past
  // the step are neither copied nor read. Stages past the last commit an empty group, so the
  // count of groups in flight stays XST - 1.
  auto stage_x = [&](int st) {
    if (st < nst) {
      x_t* dst = xs + (st % XST) * WK * XCH;
#pragma unroll
      for (int it = 0; it < WK * PL * 256 / {{ block }}; ++it) {
        const int e = tid + it * {{ block }};
        const int q = e & 3, r = (e >> 2) & 63, p = (e >> 8) % PL, w = (e >> 8) / PL;
        if (r >= mrows) continue;
        const int cc = c0e + st * WK + w, kk = cc * 32 + 8 * q;
        const bool ok = cc < c1e{% if k_tail %} && kk < {{ k }}{% endif %};
        cp_async16(dst + w * XCH + (p * 64 + r) * 32 + 8 * q,
                   ok ? x + (m0 + r) * {{ x_stride }} + p * {{ k }} + kk : x, ok);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int a = 0; a < AH; ++a) load_chunk(wq[a], c0e + wk + a * WK);
  z2c_grid_wait();
  z2c_launch_dependents();
#pragma unroll
  for (int st = 0; st < XST - 1; ++st) stage_x(st);
  for (int st = 0; st < nst; ++st) {
    cp_async_wait<XST - 2>();  // this thread's copies of stage st have landed
    __syncthreads();           // everyone's have; and every warp is done with stage st - 1
    stage_x(st + XST - 1);     // into stage st - 1's buffer
    const int c = c0e + st * WK + wk;
    // The chunk AH ahead is requested before this chunk's products.
    load_chunk(wq[AH], c + AH * WK);
    if (c < c1e) {
      const uint4 (&wv)[NTW] = wq[0];
      const x_t* xw = xs + ((st % XST) * WK + wk) * XCH + 8 * t;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i >= mt_n) break;
        const int r0 = 16 * i + g, r1 = r0 + 8;
#pragma unroll
        for (int p = 0; p < PL; ++p) {
          // A quarter warp reads rows r0 and r0 + 1 whole: 128 bytes, no bank conflict.
          const uint4 a0 = r0 < mrows ? *reinterpret_cast<const uint4*>(xw + (p * 64 + r0) * 32) : make_uint4(0u, 0u, 0u, 0u);
          const uint4 a1 = r1 < mrows ? *reinterpret_cast<const uint4*>(xw + (p * 64 + r1) * 32) : make_uint4(0u, 0u, 0u, 0u);
          const unsigned fa[4] = {a0.x, a1.x, a0.y, a1.y}, fb[4] = {a0.z, a1.z, a0.w, a1.w};
#pragma unroll
          for (int j = 0; j < NTW; ++j) {
            mma_{{ wt }}_16816(acc[i][j], fa, wv[j].x, wv[j].y);
            mma_{{ wt }}_16816(acc[i][j], fb, wv[j].z, wv[j].w);
          }
        }
      }
    }
#pragma unroll
    for (int a = 0; a < AH; ++a)
#pragma unroll
      for (int j = 0; j < NTW; ++j) wq[a][j] = wq[a + 1][j];
  }
  cp_async_wait<0>();
  __syncthreads();  // the partial tiles below reuse the x stages' shared memory
  // Park this warp's partial tile: rows g, g+8 of each m16 tile, features 2t, 2t+1 of each n-tile.
  float* mine = red + (long)wk * 64 * RSTR;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (i >= mt_n) break;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < NTW; ++j)
        *reinterpret_cast<float2*>(mine + (16 * i + g + 8 * h) * RSTR + wn * NTW * 8 + 8 * j + 2 * t) =
            make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
  }
  // Block `rank` finishes columns [rank·CPB, (rank+1)·CPB) of the valid rows (CPB: BNB/S rounded
  // up to whole float4s, so a cluster of any size up to 8 covers the block's columns; the last
  // ranks may get fewer or none): the sum over the cluster's blocks in rank order, each over its
  // k warps in order, then the linear's epilogue. (Before sm_90, or with one split, the block
  // alone finishes every column.)
#ifdef Z2C_ROWS_CLUSTER
  constexpr int QN = S;
  cluster_sync();  // every block's partial tiles are parked and visible to the cluster
  const unsigned base = smem_addr(red);
  auto part = [&](int q, int w, int r, int cc) {
    return ld_cluster_f4(cluster_map(base + (unsigned)((w * 64 + r) * RSTR + cc) * 4u, q));
  };
#else
  constexpr int QN = 1;
  __syncthreads();
  auto part = [&](int, int w, int r, int cc) { return *reinterpret_cast<const float4*>(red + (w * 64 + r) * RSTR + cc); };
#endif
  constexpr int CPB = (BNB / 4 + QN - 1) / QN * 4;
  const int nb = (tile / S) * BNB;
  const int mine_c = max(0, min(CPB, BNB - rank * CPB));  // columns this block finishes
  for (int e = tid; e < mrows * (mine_c / 4); e += {{ block }}) {
    const int r = e / (mine_c / 4), cc = rank * CPB + (e % (mine_c / 4)) * 4;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int q = 0; q < QN; ++q)
#pragma unroll
      for (int w = 0; w < WK; ++w) add_f4(sum, part(q, w, r, cc));
    const long row = m0 + r;
    const int first = nb + cc;
{% include "linear_store4.cu" %}  }
#ifdef Z2C_ROWS_CLUSTER
  cluster_sync();  // no block leaves while another still reads its tiles
#endif
}
