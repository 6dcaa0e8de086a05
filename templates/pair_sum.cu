{% include "prelude.cu" %}
{
  // A split input's two products, computed by one GEMM as rows of their own (hi·Wᵀ in columns
  // 0..{{ width }} of a `prod` row, lo·Wᵀ in {{ width }}..{{ 2 * width }}), summed into the
  // linear's output with its epilogue as templates/linear_mma_pipe.cu applies it
  // (docs/KERNELS.md "decode_rows", stacked planes).
  const long e = (long)tile * blockDim.x + threadIdx.x;
  if (e >= (long)rows * {{ width }}) return;
  const long row = e / {{ width }};
  const int n = (int)(e - row * {{ width }});
  const float* p = prod + row * {{ prod_stride }};
  float v = p[n] + p[{{ width }} + n];
{% if scaled %}  // The mixer's gated norm split around out_proj (docs/KERNELS.md "mamba_step"): the planes held
  // w ⊙ v, the row's scale 1 / sqrt(Σ v² / {{ count }} + eps) comes from mamba_step_pipe's {{ parts }}
  // partial sums, added in block order.
  const float* part = norm_ws + row * {{ ws_stride }};
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < {{ parts }}; ++j) ss += part[j];
  v *= 1.f / sqrtf(ss / {{ count }}.f + {{ eps }});
{% endif %}  const long o = row * {{ out_stride }} + n;
{% include "linear_epilogue.cu" %}  out[o] = from_f<act_t>(v);
}
