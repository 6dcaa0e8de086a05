{% include "prelude.cu" %}
{
{% if f16 is defined %}  // f32 activations rounded once to f16 (nearest even) for the tensor-core GEMMs that read them
  // in an f16-weight plan (docs/KERNELS.md "GEMM inputs"; templates/linear_mma_pipe.cu, xmode
  // f16): one f16 plane in columns 0..{{ k }} of `out`. Done once per input instead of once per
  // GEMM warp. Four elements per thread (codegen: K and the offsets are multiples of 8).
{% else %}  // f32 activations split for the tensor-core GEMMs that read them (templates/linear_mma_pipe.cu,
  // "presplit"): x = hi + lo with hi = bf16(x), lo = bf16(x − hi), round to nearest even; hi
  // goes to columns 0..{{ k }} of `out`, lo to {{ k }}..{{ 2 * k }}. Done once per input instead of
  // once per GEMM warp. Four elements per thread (codegen: K and the offsets are multiples of 8).
{% endif %}  const long e = ((long)tile * {{ block }} + threadIdx.x) * 4;
  if (e >= (long)rows * {{ k }}) return;
  const long r = e / {{ k }};
  const int c = (int)(e % {{ k }});
  const float4 v = *reinterpret_cast<const float4*>(x + r * {{ x_stride }} + c);
{% if f16 is defined %}  const unsigned lo = from_f<half_t>(v.x).bits | ((unsigned)from_f<half_t>(v.y).bits << 16);
  const unsigned hi = from_f<half_t>(v.z).bits | ((unsigned)from_f<half_t>(v.w).bits << 16);
  *reinterpret_cast<uint2*>(out + r * {{ out_stride }} + c) = make_uint2(lo, hi);
{% else %}  unsigned h0, l0, h1, l1;
  split_bf16x2(v.x, v.y, h0, l0);
  split_bf16x2(v.z, v.w, h1, l1);
  bf16_t* o = out + r * {{ out_stride }} + c;
  *reinterpret_cast<uint2*>(o) = make_uint2(h0, h1);
  *reinterpret_cast<uint2*>(o + {{ k }}) = make_uint2(l0, l1);
{% endif %}}
