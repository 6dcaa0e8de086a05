{% include "prelude.cu" %}
{
  // GELU(gate)·up of a gated MLP's prompt rows (docs/KERNELS.md "gelu_mul"; ZAMBA2.md §2.5): the
  // arithmetic of the two elementwise kernels it replaces (gelu in f32 rounded to act_t, then
  // the product rounded to act_t) in one pass over the gate_up output, written as the down
  // projection reads it, four values a thread:
{% if mode == "bf16" %}  // bf16 hi and lo planes side by side (split_bf16x2, as split_bf16 makes them).
{% elif mode == "f16" %}  // one f16 plane (rounded as round_f16 does).
{% else %}  // act_t values.
{% endif %}
  constexpr int W = {{ width }};
  const long e = ((long)tile * {{ block }} + threadIdx.x) * 4;
  if (e >= (long)rows * W) return;
  const long r = e / W;
  const int c = (int)(e % W);
  float g[4], u[4], y[4];
  ld4(gu + r * {{ gu_stride }} + c, g);
  ld4(gu + r * {{ gu_stride }} + W + c, u);
#pragma unroll
  for (int i = 0; i < 4; ++i) y[i] = rnd<act_t>(rnd<act_t>(gelu_f(g[i])) * u[i]);
{% if mode == "bf16" %}  unsigned h0, l0, h1, l1;
  split_bf16x2(y[0], y[1], h0, l0);
  split_bf16x2(y[2], y[3], h1, l1);
  auto* o = out + r * {{ out_stride }} + c;
  *reinterpret_cast<uint2*>(o) = make_uint2(h0, h1);
  *reinterpret_cast<uint2*>(o + W) = make_uint2(l0, l1);
{% else %}  st4(out + r * {{ out_stride }} + c, y);
{% endif %}}
