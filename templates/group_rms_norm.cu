{% include "prelude.cu" %}
{
  // w ⊙ groupnorm(x), f32 math: the gated norm of a Mamba2 mixer (ZAMBA2.md §3.2, §6.7) on a
  // gate already applied (mamba_step's f32 output y·silu(z)), so the same rounding as
  // templates/gated_rms_norm.cu. One block per (row, group of {{ group }} channels).
  const long r = tile;
  const int c0 = blockIdx.y * {{ group }};
  const auto* src = x;
  const long src_off = r * {{ x_stride }} + c0;
{% set count = group %}{% set gated = false %}{% include "norm_body.cu" %}}
