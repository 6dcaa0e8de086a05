{% include "prelude.cu" %}
{
  // w ⊙ cast(x / sqrt(mean(x²) + eps)), statistics in f32 (ZAMBA2.md §2.6, §6.1b). One block
  // per row.
  const long r = tile;
  const int c0 = 0;
  const auto* src = x;
  const long src_off = r * {{ x_stride }};
{% if two %}  // Two inputs: the norm of their concatenation [x, x2] read in place (a shared block's input,
  // ZAMBA2.md §2.3: [hidden, embeddings]; no `concat` launch): channel c is x's below
  // {{ half }}, x2's c - {{ half }} from there.
  const long src2_off = r * {{ x2_stride }};
  auto src_at = [&](int c) -> float {
    return c < {{ half }} ? to_f(src[src_off + c]) : to_f(x2[src2_off + c - {{ half }}]);
  };
{% endif %}{% set count = width %}{% set gated = false %}{% include "norm_body.cu" %}}
