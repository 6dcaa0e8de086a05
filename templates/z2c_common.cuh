// z2c_common.cuh: device helpers shared by every zamba2c kernel (inlined into each .cu at
// render time, so a generated file compiles on its own with NVRTC and needs no include path).
// Numerics follow ZAMBA2.md §6: f32 math and accumulation, rounding to the activation dtype
// where transformers rounds.

typedef int i32;

// NVRTC compiles without the C headers: define what the kernels use from <math.h>.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// bfloat16 as its bit pattern: no cuda_bf16.h needed (NVRTC without headers compiles this).
struct __align__(2) bf16_t { unsigned short bits; };

// IEEE half as its bit pattern, converted with the PTX cvt instructions (no cuda_fp16.h).
struct __align__(2) half_t { unsigned short bits; };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16_t x) { return __uint_as_float(((unsigned)x.bits) << 16); }
__device__ __forceinline__ float to_f(half_t x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
}

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
// Round to nearest even, as torch's .to(bfloat16) and the half crate do; NaN stays NaN.
template <> __device__ __forceinline__ bf16_t from_f<bf16_t>(float x) {
  unsigned u = __float_as_uint(x);
  bf16_t r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (unsigned short)((u >> 16) | 0x40u);
    return r;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  r.bits = (unsigned short)(u >> 16);
  return r;
}

// Round to nearest even, as torch's .to(float16); overflow gives inf.
template <> __device__ __forceinline__ half_t from_f<half_t>(float x) {
  half_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
  return r;
}

// x rounded to T and back: where transformers materialises a tensor in the model dtype.
template <typename T> __device__ __forceinline__ float rnd(float x) { return to_f(from_f<T>(x)); }

// Vector loads of VEC consecutive elements (16 bytes when VEC > 1; the caller guarantees the
// alignment, which codegen checks from the shapes and offsets).
__device__ __forceinline__ void loadv(const float* p, float (&o)[1]) { o[0] = p[0]; }
__device__ __forceinline__ void loadv(const bf16_t* p, float (&o)[1]) { o[0] = to_f(p[0]); }
__device__ __forceinline__ void loadv(const half_t* p, float (&o)[1]) { o[0] = to_f(p[0]); }
__device__ __forceinline__ void loadv(const float* p, float (&o)[4]) {
  float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
// Eight f32 activations beside eight bf16 weights (bf16 weights, f32 activations).
__device__ __forceinline__ void loadv(const float* p, float (&o)[8]) {
  float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w; o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
__device__ __forceinline__ void unpack2(unsigned w, float* o) {
  o[0] = __uint_as_float(w << 16);
  o[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void loadv(const bf16_t* p, float (&o)[8]) {
  uint4 v = *reinterpret_cast<const uint4*>(p);
  unpack2(v.x, o); unpack2(v.y, o + 2); unpack2(v.z, o + 4); unpack2(v.w, o + 6);
}
// Eight f16 weights (f16-weight plans), converted exactly to f32.
__device__ __forceinline__ void unpack2_f16(unsigned w, float* o) {
  o[0] = to_f(half_t{(unsigned short)(w & 0xffffu)});
  o[1] = to_f(half_t{(unsigned short)(w >> 16)});
}
__device__ __forceinline__ void loadv(const half_t* p, float (&o)[8]) {
  uint4 v = *reinterpret_cast<const uint4*>(p);
  unpack2_f16(v.x, o); unpack2_f16(v.y, o + 2); unpack2_f16(v.z, o + 4); unpack2_f16(v.w, o + 6);
}

// MT consecutive f32 values of shared memory to registers and back (16-byte accesses when MT
// is 4: the caller keeps such rows 16-byte aligned). The chunked scan's register tiles.
template <int MT> __device__ __forceinline__ void lds_row(const float* p, float (&o)[MT]) {
#pragma unroll
  for (int i = 0; i < MT; ++i) o[i] = p[i];
}
template <> __device__ __forceinline__ void lds_row<4>(const float* p, float (&o)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
template <int MT> __device__ __forceinline__ void sts_row(float* p, const float (&v)[MT]) {
#pragma unroll
  for (int i = 0; i < MT; ++i) p[i] = v[i];
}
template <> __device__ __forceinline__ void sts_row<4>(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < nw; ++i) t += scratch[i];
  return t;
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }
// Exact erf GELU (ZAMBA2.md §6.11).
__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }
// PyTorch's softplus: x itself above the threshold 20 (§6.8).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Tensor cores (the prompt-path GEMM, templates/linear_mma.cu). Packs two bf16 bit patterns into
// one 32-bit register, the first element in the low half (the order mma fragments use).
__device__ __forceinline__ unsigned pack_bf16x2(bf16_t a, bf16_t b) {
  return (unsigned)a.bits | ((unsigned)b.bits << 16);
}
__device__ __forceinline__ unsigned pack_f16x2(half_t a, half_t b) {
  return (unsigned)a.bits | ((unsigned)b.bits << 16);
}
// Splits two f32 values as x = hi + lo with hi = bf16(x), lo = bf16(x - hi) (x - hi is exact in
// f32), both rounded to nearest even by the hardware's paired conversion (the same values as
// from_f<bf16_t> for every non-NaN x, in a tenth of the instructions): ~16 bits of mantissa
// survive. A non-finite x keeps lo = 0, so inf stays inf.
__device__ __forceinline__ void split_bf16x2(float x0, float x1, unsigned& hi, unsigned& lo) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(hi) : "f"(x1), "f"(x0));
  float r0 = x0 - __uint_as_float(hi << 16), r1 = x1 - __uint_as_float(hi & 0xffff0000u);
  if (!(r0 == r0)) r0 = 0.f;
  if (!(r1 == r1)) r1 = 0.f;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(lo) : "f"(r1), "f"(r0));
#else  // no paired conversion before sm_80
  const bf16_t h0 = from_f<bf16_t>(x0), h1 = from_f<bf16_t>(x1);
  float r0 = x0 - to_f(h0), r1 = x1 - to_f(h1);
  if (!(r0 == r0)) r0 = 0.f;
  if (!(r1 == r1)) r1 = 0.f;
  hi = pack_bf16x2(h0, h1);
  lo = pack_bf16x2(from_f<bf16_t>(r0), from_f<bf16_t>(r1));
#endif
}
// The same split into f16 parts (11 significant bits each: ~22 survive), for attention tiles of
// an f16 cache (templates/attention_flash.cu). A value beyond f16's range keeps lo = 0.
__device__ __forceinline__ void split_f16x2(float x0, float x1, unsigned& hi, unsigned& lo) {
  const half_t h0 = from_f<half_t>(x0), h1 = from_f<half_t>(x1);
  float r0 = x0 - to_f(h0), r1 = x1 - to_f(h1);
  if (!(fabsf(r0) <= 65504.f)) r0 = 0.f;
  if (!(fabsf(r1) <= 65504.f)) r1 = 0.f;
  hi = pack_f16x2(h0, h1);
  lo = pack_f16x2(from_f<half_t>(r0), from_f<half_t>(r1));
}
// Four consecutive values of an f32 or 16-bit array (16- or 8-byte aligned) to f32 and back,
// rounding to nearest even: the SSM state rows of templates/mamba_step.cu.
__device__ __forceinline__ void ld4(const float* p, float* o) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
__device__ __forceinline__ void ld4(const half_t* p, float* o) {
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  unpack2_f16(v.x, o); unpack2_f16(v.y, o + 2);
}
__device__ __forceinline__ void ld4(const bf16_t* p, float* o) {
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  unpack2(v.x, o); unpack2(v.y, o + 2);
}
// One 8- or 16-byte store to global memory as one vector instruction (p aligned to its size).
// NVRTC 13.0 compiled `*reinterpret_cast<uint2*>(p) = ...` (and uint4) on a 16-bit element
// pointer into 32-bit stores, so a warp writing a state tile touched 2–4× the L2 sectors it
// wrote: Nsight Compute's source counters put 3.9M of mamba_step_pipe's 5.0M excessive sectors
// on its four split stores (docs/PERFORMANCE.md, twenty-first session).
__device__ __forceinline__ void stg8(void* p, const uint2& v) {
  asm volatile("st.global.v2.u32 [%0], { %1, %2 };" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}
__device__ __forceinline__ void stg16(void* p, const uint4& v) {
  asm volatile("st.global.v4.u32 [%0], { %1, %2, %3, %4 };" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
// st4: four values to global memory in one store (stg16 / stg8; the f32 form was split too).
__device__ __forceinline__ void st4(float* p, const float* v) {
  stg16(p, make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3])));
}
__device__ __forceinline__ void st4(half_t* p, const float* v) {
  stg8(p, make_uint2(pack_f16x2(from_f<half_t>(v[0]), from_f<half_t>(v[1])),
                     pack_f16x2(from_f<half_t>(v[2]), from_f<half_t>(v[3]))));
}
__device__ __forceinline__ void st4(bf16_t* p, const float* v) {
  stg8(p, make_uint2(pack_bf16x2(from_f<bf16_t>(v[0]), from_f<bf16_t>(v[1])),
                     pack_bf16x2(from_f<bf16_t>(v[2]), from_f<bf16_t>(v[3]))));
}
// Two consecutive values (8- or 4-byte aligned) to f32 and back in one access: a thread's
// pair of columns in an mma fragment (templates/ssd_chunk_out_mma.cu, `pair_io`), a key row's pair in
// attention_flash's staged K and V tiles.
__device__ __forceinline__ void ld2(const float* p, float* o) {
  const float2 v = *reinterpret_cast<const float2*>(p);
  o[0] = v.x; o[1] = v.y;
}
__device__ __forceinline__ void ld2(const half_t* p, float* o) { unpack2_f16(*reinterpret_cast<const unsigned*>(p), o); }
__device__ __forceinline__ void ld2(const bf16_t* p, float* o) { unpack2(*reinterpret_cast<const unsigned*>(p), o); }
__device__ __forceinline__ void st2(float* p, const float* v) {
  stg8(p, make_uint2(__float_as_uint(v[0]), __float_as_uint(v[1])));
}
__device__ __forceinline__ void st2(half_t* p, const float* v) {
  *reinterpret_cast<unsigned*>(p) = pack_f16x2(from_f<half_t>(v[0]), from_f<half_t>(v[1]));
}
__device__ __forceinline__ void st2(bf16_t* p, const float* v) {
  *reinterpret_cast<unsigned*>(p) = pack_bf16x2(from_f<bf16_t>(v[0]), from_f<bf16_t>(v[1]));
}
// 16 bytes of T values (4 f32, or 8 16-bit) to f32 and back, rounding to nearest even: a
// thread's chunk of an SSM state tile (templates/mamba_step_pipe.cu).
template <typename T> __device__ __forceinline__ void unpack16(const uint4& r, float* o);
template <> __device__ __forceinline__ void unpack16<float>(const uint4& r, float* o) {
  o[0] = __uint_as_float(r.x); o[1] = __uint_as_float(r.y);
  o[2] = __uint_as_float(r.z); o[3] = __uint_as_float(r.w);
}
template <> __device__ __forceinline__ void unpack16<half_t>(const uint4& r, float* o) {
  unpack2_f16(r.x, o); unpack2_f16(r.y, o + 2); unpack2_f16(r.z, o + 4); unpack2_f16(r.w, o + 6);
}
template <> __device__ __forceinline__ void unpack16<bf16_t>(const uint4& r, float* o) {
  unpack2(r.x, o); unpack2(r.y, o + 2); unpack2(r.z, o + 4); unpack2(r.w, o + 6);
}
template <typename T> __device__ __forceinline__ uint4 pack16(const float* v);
template <> __device__ __forceinline__ uint4 pack16<float>(const float* v) {
  return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
}
template <> __device__ __forceinline__ uint4 pack16<half_t>(const float* v) {
  return make_uint4(pack_f16x2(from_f<half_t>(v[0]), from_f<half_t>(v[1])),
                    pack_f16x2(from_f<half_t>(v[2]), from_f<half_t>(v[3])),
                    pack_f16x2(from_f<half_t>(v[4]), from_f<half_t>(v[5])),
                    pack_f16x2(from_f<half_t>(v[6]), from_f<half_t>(v[7])));
}
template <> __device__ __forceinline__ uint4 pack16<bf16_t>(const float* v) {
  return make_uint4(pack_bf16x2(from_f<bf16_t>(v[0]), from_f<bf16_t>(v[1])),
                    pack_bf16x2(from_f<bf16_t>(v[2]), from_f<bf16_t>(v[3])),
                    pack_bf16x2(from_f<bf16_t>(v[4]), from_f<bf16_t>(v[5])),
                    pack_bf16x2(from_f<bf16_t>(v[6]), from_f<bf16_t>(v[7])));
}
// One f32 value split by the same rule into its hi plane at o[0] and its lo plane at o[k]: a norm
// that writes the planes its GEMMs read (templates/rms_norm.cu, `split`).
__device__ __forceinline__ void store_split_bf16(bf16_t* o, int k, float x) {
  const bf16_t h = from_f<bf16_t>(x);
  float r = x - to_f(h);
  if (!(r == r)) r = 0.f;
  o[0] = h;
  o[k] = from_f<bf16_t>(r);
}
// The GEMM input of f16-weight plans: one f16 plane, x rounded once to nearest even (11
// significant bits; docs/KERNELS.md "GEMM inputs"). Same call shape as store_split_bf16, so a
// norm writes either form through `store_gemm_input`.
__device__ __forceinline__ void store_gemm_input(bf16_t* o, int k, float x) { store_split_bf16(o, k, x); }
__device__ __forceinline__ void store_gemm_input(half_t* o, int, float x) { o[0] = from_f<half_t>(x); }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
// d += a · b for one m16n8k16 tile: 16-bit inputs of type T (bf16 or f16), f32 accumulation (PTX
// mma.sync, sm_80+): mma_bf16_16816 and mma_f16_16816 (f16-weight plans, docs/KERNELS.md "GEMM
// inputs"). (Braces spaced from '%': the header is a tera template.)
#define Z2C_MMA_16816(NAME, T)                                                                  \
  __device__ __forceinline__ void NAME(float (&d)[4], const unsigned (&a)[4], unsigned b0,      \
                                       unsigned b1) {                                           \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 { %0, %1, %2, %3 }, "  \
                 "{ %4, %5, %6, %7 }, { %8, %9 }, { %0, %1, %2, %3 };\n"                        \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                               \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));               \
  }
Z2C_MMA_16816(mma_bf16_16816, "bf16")
Z2C_MMA_16816(mma_f16_16816, "f16")

// Two f32 values to a packed f16 pair, round to nearest even, `lo` in the low half.
__device__ __forceinline__ unsigned cvt_f16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// Two f32 values to a packed bf16 pair, round to nearest even, `lo` in the low half (the order
// mma fragments use). PTX cvt puts its first source in the upper half.
__device__ __forceinline__ unsigned cvt_bf16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// s += p, component by component (partial tiles summed in a fixed order).
__device__ __forceinline__ void add_f4(float4& s, const float4& p) {
  s.x += p.x;
  s.y += p.y;
  s.z += p.z;
  s.w += p.w;
}
// Shared-memory address of a generic pointer, for cp.async and ldmatrix.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
{% if smem_cvta %}  // The compiler's own conversion (the default): it sees the arithmetic, so a loop's
  // addresses become one base and constant offsets (inline PTX: ZAMBA2C_TUNE_SMEM_CVTA=0).
  return (unsigned)__cvta_generic_to_shared(p);
{% else %}  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
{% endif %}}
// 16 bytes of read-only data streamed from global memory into registers, not kept in L1 (a
// weight byte is used once per launch: templates/linear_rows.cu). Volatile keeps it where it
// is written: ahead of the products it overlaps.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 { %0, %1, %2, %3 }, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
// 16 bytes global → shared without passing through registers; `ok` false fills zeros (the
// source is not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
               "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// Four 8×8 b16 matrices from shared memory; lane l gives the shared address (smem_addr) of row
// l % 8 of matrix l / 8 and receives, of each matrix, row l / 4, elements 2(l % 4) and
// 2(l % 4) + 1. Taking the address lets a loop convert its base once and add constant byte
// offsets, so an unrolled loop's loads take immediate offsets.
__device__ __forceinline__ void ldmatrix_x4(unsigned a, unsigned& r0, unsigned& r1, unsigned& r2,
                                            unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 { %0, %1, %2, %3 }, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(a));
}
// The same from a generic pointer into shared memory.
__device__ __forceinline__ void ldmatrix_x4(const void* p, unsigned& r0, unsigned& r1, unsigned& r2,
                                            unsigned& r3) {
  ldmatrix_x4(smem_addr(p), r0, r1, r2, r3);
}
// ldmatrix_x4 with each 8×8 matrix transposed: lane l receives, of each matrix, column l / 4 at
// rows 2(l % 4) and 2(l % 4) + 1 — the B fragment of mma.m16n8k16 from row-major [k][n] tiles.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned a, unsigned& r0, unsigned& r1,
                                                  unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 { %0, %1, %2, %3 }, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(a));
}
// The same from a generic pointer into shared memory.
__device__ __forceinline__ void ldmatrix_x4_trans(const void* p, unsigned& r0, unsigned& r1,
                                                  unsigned& r2, unsigned& r3) {
  ldmatrix_x4_trans(smem_addr(p), r0, r1, r2, r3);
}
// 3xBF16 (docs/KERNELS.md "ssd"): f32 operands held in shared memory as two bf16 planes, v = hi +
// lo (split_bf16x2: ~16 significant bits), multiplied as a_lo·b_hi + a_hi·b_lo + a_hi·b_hi on
// tensor cores (what is dropped, a_lo·b_lo, is near 2^-16 of the product). One warp: acc[j] +=
// A · B for 16 rows of A and 8·NJ columns of B (NJ even), k in [k0, k1) (multiples of 16).
// A(r, k) is at [r·lda + k] of each plane, or at [k·lda + r] when A_KR; B(k, c) is at [c·ldb +
// k], or at [k·ldb + c] when B_KC (pointers at the tile's first row and column; lo planes
// `a_lo` / `b_lo` elements after hi). Row pitches of an odd number of 16-byte units keep
// ldmatrix free of bank conflicts. acc[j] holds the m16n8 tile of columns 8j.. in mma's C layout: [i] is row
// lane/4 + 8·(i/2), column 2·(lane%4) + i%2.
template <int NJ, bool A_KR, bool B_KC>
__device__ __forceinline__ void warp_mma_3xbf16(float (&acc)[NJ][4], const unsigned short* a, int lda,
                                                int a_lo, const unsigned short* b, int ldb, int b_lo,
                                                int k0, int k1) {
  static_assert(NJ % 2 == 0, "B fragments come two column tiles at a time");
  const int lane = threadIdx.x & 31, mat = lane >> 3, r = lane & 7;
  for (int k = k0; k < k1; k += 16) {
    // A fragment: matrices (rows +0, k +0), (rows +8, k +0), (rows +0, k +8), (rows +8, k +8).
    unsigned ah[4], al[4];
    const unsigned short* pa = A_KR ? a + (k + (mat >> 1) * 8 + r) * lda + (mat & 1) * 8
                                    : a + ((mat & 1) * 8 + r) * lda + k + (mat >> 1) * 8;
    if (A_KR) {
      ldmatrix_x4_trans(pa, ah[0], ah[1], ah[2], ah[3]);
      ldmatrix_x4_trans(pa + a_lo, al[0], al[1], al[2], al[3]);
    } else {
      ldmatrix_x4(pa, ah[0], ah[1], ah[2], ah[3]);
      ldmatrix_x4(pa + a_lo, al[0], al[1], al[2], al[3]);
    }
#pragma unroll
    for (int j = 0; j < NJ; j += 2) {
      // B fragments of column tiles j and j + 1: [0], [1] of tile j, [2], [3] of tile j + 1.
      unsigned bh[4], bl[4];
      if (B_KC) {
        const unsigned short* pb = b + (k + (mat & 1) * 8 + r) * ldb + (j + (mat >> 1)) * 8;
        ldmatrix_x4_trans(pb, bh[0], bh[1], bh[2], bh[3]);
        ldmatrix_x4_trans(pb + b_lo, bl[0], bl[1], bl[2], bl[3]);
      } else {
        const unsigned short* pb = b + ((j + (mat >> 1)) * 8 + r) * ldb + k + (mat & 1) * 8;
        ldmatrix_x4(pb, bh[0], bh[1], bh[2], bh[3]);
        ldmatrix_x4(pb + b_lo, bl[0], bl[1], bl[2], bl[3]);
      }
      // The small terms first, the large one last.
      mma_bf16_16816(acc[j], al, bh[0], bh[1]);
      mma_bf16_16816(acc[j + 1], al, bh[2], bh[3]);
      mma_bf16_16816(acc[j], ah, bl[0], bl[1]);
      mma_bf16_16816(acc[j + 1], ah, bl[2], bl[3]);
      mma_bf16_16816(acc[j], ah, bh[0], bh[1]);
      mma_bf16_16816(acc[j + 1], ah, bh[2], bh[3]);
    }
  }
}
// A tile of ROWS rows of W values (W a multiple of 4; row r at src + r·ld, 4-value aligned) in
// float4 pieces, piece e = thread + i·NT being row e / (W/4), columns 4·(e % (W/4)) ..; rows at or
// past `valid`, and pieces past the tile, are zero. Loads only, so every load of a block's tiles
// is in flight before the first store (store_split).
template <int ROWS, int W, int NT>
struct Tile {
  static constexpr int Q = W / 4, PER = (ROWS * Q + NT - 1) / NT;
  float v[PER][4];
  template <typename T> __device__ __forceinline__ void load(const T* src, long ld, int valid) {
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int e = threadIdx.x + i * NT, r = e / Q, c = (e % Q) * 4;
      if (e < ROWS * Q && r < valid) {
        ld4(src + r * ld + c, v[i]);
      } else {
        v[i][0] = v[i][1] = v[i][2] = v[i][3] = 0.f;
      }
    }
  }
  // Into the bf16 planes hi (row r at hi + r·pitch) and hi + lo (split_bf16x2), each row times
  // scale[r] first when scale is given.
  __device__ __forceinline__ void store_split(unsigned short* hi, int pitch, int lo,
                                              const float* scale = nullptr) const {
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int e = threadIdx.x + i * NT, r = e / Q, c = (e % Q) * 4;
      if (e >= ROWS * Q) break;
      const float m = scale ? scale[r] : 1.f;
      unsigned h0, l0, h1, l1;
      split_bf16x2(v[i][0] * m, v[i][1] * m, h0, l0);
      split_bf16x2(v[i][2] * m, v[i][3] * m, h1, l1);
      *reinterpret_cast<uint2*>(hi + r * pitch + c) = make_uint2(h0, h1);
      *reinterpret_cast<uint2*>(hi + lo + r * pitch + c) = make_uint2(l0, l1);
    }
  }
};
#endif

// Thread-block clusters (sm_90+; docs/KERNELS.md "decode_rows", split-K GEMM): a kernel declared
// with Z2C_CLUSTER(n) runs in clusters of n consecutive blocks along x, whose shared memory each
// block of the cluster can read. Before sm_90 the attribute is absent and such kernels take their
// single-block path.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define Z2C_CLUSTER(n) __cluster_dims__(n, 1, 1)
// Every thread of every block of the cluster arrives; shared-memory writes before it are visible
// to the whole cluster after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// The address, in the cluster's shared window, of shared address `a` in block `rank` of the cluster.
__device__ __forceinline__ unsigned cluster_map(unsigned a, unsigned rank) {
  unsigned r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
  return r;
}
__device__ __forceinline__ float4 ld_cluster_f4(unsigned a) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 { %0, %1, %2, %3 }, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(a)
               : "memory");
  return v;
}
#else
#define Z2C_CLUSTER(n)
#endif

// Programmatic dependent launch (docs/KERNELS.md "Overlapping launches"). The runtime launches
// every kernel allowed to start before the previous one has finished (sm_90+). Nothing a
// kernel reads that an earlier launch writes, and nothing it writes, may be touched before
// z2c_grid_wait(), which returns once every earlier launch has completed and its writes are
// visible; before it a kernel may only read what no launch of the step writes (weights, and
// the recurrent state of its own layer, which only this family writes). z2c_launch_dependents()
// lets the next launch's blocks become resident (they run up to their own wait). Both are
// no-ops without the launch attribute and on older GPUs.
__device__ __forceinline__ void z2c_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void z2c_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Asks L2 for the 128-byte line holding p (a hint: no fault, no register written).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
