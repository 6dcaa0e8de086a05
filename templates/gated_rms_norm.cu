{% include "prelude.cu" %}
{
  // w ⊙ groupnorm(y ⊙ silu(z)), gate before norm, f32 math (ZAMBA2.md §3.2, §6.7).
  // One block per (row, group of {{ group }} channels).
  const long r = tile;
  const int c0 = blockIdx.y * {{ group }};
  const auto* src = y;
  const long src_off = r * {{ y_stride }} + c0, z_off = r * {{ z_stride }} + c0;
{% set count = group %}{% set gated = true %}{% include "norm_body.cu" %}}
