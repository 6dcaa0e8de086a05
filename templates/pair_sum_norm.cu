{% include "prelude.cu" %}
{
  // A residual sum left by the node before (templates/pair_sum.cu's arithmetic: the two stacked
  // products added{% if scaled %}, scaled by the mixer's norm{% endif %}, the residual epilogue) computed
  // as this node's RMSNorm reads it (templates/rms_norm.cu's arithmetic, written as GEMM input
  // planes): one launch for the two (`ZAMBA2C_TUNE_ROWS_SUM_NORM=1`, docs/KERNELS.md
  // "decode_rows"). The sum is written into its own value too, for the nodes after. One block
  // per row.
  const long r = tile;
  const int c0 = 0;
  const float* p = prod + r * {{ prod_stride }};
  {{ hidden_t }}* h = hidden + r * {{ hidden_stride }};
{% if scaled %}  // The row's scale 1 / sqrt(Σ v² / {{ count }} + eps) from mamba_step_pipe's {{ parts }} partial sums, in
  // block order (pair_sum's `scaled`).
  const float* part = norm_ws + r * {{ ws_stride }};
  float pss = 0.f;
#pragma unroll
  for (int j = 0; j < {{ parts }}; ++j) pss += part[j];
  const float scale = 1.f / sqrtf(pss / {{ count }}.f + {{ scale_eps }});
{% endif %}  auto src_at = [&](int n) -> float {
    float v = p[n] + p[{{ width }} + n];
{% if scaled %}    v *= scale;
{% endif %}{% if epi == "residual" %}    v = to_f(res[r * {{ res_stride }} + n]) + rnd<act_t>(v);  // the residual add (ZAMBA2.md §2.2)
{% endif %}    const {{ hidden_t }} hv = from_f<{{ hidden_t }}>(v);
    h[n] = hv;
    return to_f(hv);
  };
{% set count = width %}{% set gated = false %}{% set two = true %}{% include "norm_body.cu" %}}
