{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k] on tensor cores (bf16 weights, sm_80+): 128×128 output
  // tiles, k steps of 32 staged through shared memory as bf16, 8 warps of 64×32 outputs each,
  // mma.sync m16n8k16 with f32 accumulation. The next k step's tiles are loaded into registers
  // while the current one is multiplied. Codegen guarantees that K, both row strides and both
  // offsets are multiples of 8 elements (16-byte loads, whole 8-element k chunks); rows past
  // `rows`, features past N and k past K are zero-filled.
{% if split %}  // f32 activations are split as x = hi + lo, hi = bf16(x), lo = bf16(x - hi), and both parts
  // are multiplied by the same weight tile: ~16 bits of each activation's mantissa are kept.
{% endif %}  // Tile sizes come from codegen (families.rs MMA_TILE, MMA_BK, MMA_WARPS); the fragment and
  // load mapping below is written for them.
  constexpr int BM = {{ tile }}, BN = {{ tile }}, BK = {{ bk }}, LD = BK + 8;  // +8: conflict-free fragment loads
  constexpr int NT = {{ block }}, MI = 4;  // MI: 16-row A fragments per warp
  static_assert(BM == 128 && BK == 32 && NT == 256, "linear_mma's thread mapping");
  __shared__ __align__(16) unsigned short Ah[BM * LD];
{% if split %}  __shared__ __align__(16) unsigned short Al[BM * LD];
{% endif %}  __shared__ __align__(16) unsigned short Bs[BN * LD];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
  const long m0 = (long)blockIdx.y * BM;
  const int n0 = tile * BN;

  // Global → registers: W (and bf16 x) as 2 chunks of 8 bf16 per thread, f32 x as 4 float4.
  uint4 wr[2];
{% if f32x %}  float4 xr[4];
{% else %}  uint4 xr[2];
{% endif %}  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int e = tid + i * NT, r = e >> 2, k = k0 + (e & 3) * 8;
      const int n = n0 + r;
      wr[i] = (n < {{ n }} && k < {{ k }})
                  ? *reinterpret_cast<const uint4*>(weight + (long)n * {{ w_stride }} + k)
                  : make_uint4(0u, 0u, 0u, 0u);
    }
{% if f32x %}#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * NT, r = e >> 3, k = k0 + (e & 7) * 4;
      const long m = m0 + r;
      xr[i] = (m < rows && k < {{ k }})
                  ? *reinterpret_cast<const float4*>(x + m * {{ x_stride }} + k)
                  : make_float4(0.f, 0.f, 0.f, 0.f);
    }
{% else %}#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int e = tid + i * NT, r = e >> 2, k = k0 + (e & 3) * 8;
      const long m = m0 + r;
      xr[i] = (m < rows && k < {{ k }})
                  ? *reinterpret_cast<const uint4*>(x + m * {{ x_stride }} + k)
                  : make_uint4(0u, 0u, 0u, 0u);
    }
{% endif %}  };
  // Registers → shared memory (bf16; f32 x split into its hi and lo parts).
  auto store = [&]() {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int e = tid + i * NT;
      *reinterpret_cast<uint4*>(&Bs[(e >> 2) * LD + (e & 3) * 8]) = wr[i];
    }
{% if split %}#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * NT, o = (e >> 3) * LD + (e & 7) * 4;
      unsigned h0, l0, h1, l1;
      split_bf16x2(xr[i].x, xr[i].y, h0, l0);
      split_bf16x2(xr[i].z, xr[i].w, h1, l1);
      *reinterpret_cast<uint2*>(&Ah[o]) = make_uint2(h0, h1);
      *reinterpret_cast<uint2*>(&Al[o]) = make_uint2(l0, l1);
    }
{% elif f32x %}#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // One bf16 rounding of the f32 activations (MMA_SPLIT=2).
      const int e = tid + i * NT, o = (e >> 3) * LD + (e & 7) * 4;
      const unsigned h0 = pack_bf16x2(from_f<bf16_t>(xr[i].x), from_f<bf16_t>(xr[i].y));
      const unsigned h1 = pack_bf16x2(from_f<bf16_t>(xr[i].z), from_f<bf16_t>(xr[i].w));
      *reinterpret_cast<uint2*>(&Ah[o]) = make_uint2(h0, h1);
    }
{% else %}#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int e = tid + i * NT;
      *reinterpret_cast<uint4*>(&Ah[(e >> 2) * LD + (e & 3) * 8]) = xr[i];
    }
{% endif %}  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

  load(0);
  for (int k0 = 0; k0 < {{ k }}; k0 += BK) {
    store();
    __syncthreads();
    if (k0 + BK < {{ k }}) load(k0 + BK);
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      // Fragments of mma.m16n8k16 (PTX ISA): lane (g = lane / 4, t = lane % 4) holds A rows g
      // and g + 8, columns 2t, 2t + 1 and 2t + 8, 2t + 9; B column (feature) g, rows (k) 2t,
      // 2t + 1 and 2t + 8, 2t + 9. Both tiles keep k contiguous: 32-bit shared loads.
      unsigned b[4][2];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int o = (wn + j * 8 + g) * LD + ks + 2 * t;
        b[j][0] = *reinterpret_cast<const unsigned*>(&Bs[o]);
        b[j][1] = *reinterpret_cast<const unsigned*>(&Bs[o + 8]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int o = (wm + i * 16 + g) * LD + ks + 2 * t;
        unsigned a[4];
        a[0] = *reinterpret_cast<const unsigned*>(&Ah[o]);
        a[1] = *reinterpret_cast<const unsigned*>(&Ah[o + 8 * LD]);
        a[2] = *reinterpret_cast<const unsigned*>(&Ah[o + 8]);
        a[3] = *reinterpret_cast<const unsigned*>(&Ah[o + 8 * LD + 8]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[i][j], a, b[j][0], b[j][1]);
{% if split %}        a[0] = *reinterpret_cast<const unsigned*>(&Al[o]);
        a[1] = *reinterpret_cast<const unsigned*>(&Al[o + 8 * LD]);
        a[2] = *reinterpret_cast<const unsigned*>(&Al[o + 8]);
        a[3] = *reinterpret_cast<const unsigned*>(&Al[o + 8 * LD + 8]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[i][j], a, b[j][0], b[j][1]);
{% endif %}      }
    }
    __syncthreads();
  }

{% include "mma_store.cu" %}}
