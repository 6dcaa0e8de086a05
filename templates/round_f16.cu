{% include "prelude.cu" %}
{
  // f32 activations rounded once to f16 (nearest even) for the tensor-core GEMMs that read them
  // in an f16-weight plan (docs/KERNELS.md "GEMM inputs"; templates/linear_mma_pipe.cu, xmode
  // f16): one f16 plane, where bf16 weights take templates/split_bf16.cu's two bf16 planes. Done
  // once per input instead of once per GEMM warp. Four elements per thread (codegen: K and the
  // offsets are multiples of 8).
  const long e = ((long)tile * {{ block }} + threadIdx.x) * 4;
  if (e >= (long)rows * {{ k }}) return;
  const long r = e / {{ k }};
  const int c = (int)(e % {{ k }});
  const float4 v = *reinterpret_cast<const float4*>(x + r * {{ x_stride }} + c);
  const unsigned lo = from_f<half_t>(v.x).bits | ((unsigned)from_f<half_t>(v.y).bits << 16);
  const unsigned hi = from_f<half_t>(v.z).bits | ((unsigned)from_f<half_t>(v.w).bits << 16);
  *reinterpret_cast<uint2*>(out + r * {{ out_stride }} + c) = make_uint2(lo, hi);
}
