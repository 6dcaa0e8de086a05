{% include "prelude.cu" %}
{
  // w ⊙ cast(x / sqrt(mean(x²) + eps)), statistics in f32 (ZAMBA2.md §2.6, §6.1b). One block
  // per row.
  const long r = tile;
  const int c0 = 0;
  const auto* src = x;
  const long src_off = r * {{ x_stride }};
{% set count = width %}{% set gated = false %}{% include "norm_body.cu" %}}
