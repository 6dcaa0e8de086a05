{% include "prelude.cu" %}
{
  // {{ op }} over [rows, {{ width }}], computed in f32 and rounded once.
  const long i = (long)tile * blockDim.x + threadIdx.x;
  if (i >= (long)rows * {{ width }}) return;
  const long r = i / {{ width }};
  const int c = (int)(i - r * {{ width }});
  const float a = to_f(in0[r * {{ stride0 }} + c]);
{% if nin == 2 %}  const float b = to_f(in1[r * {{ stride1 }} + c]);
{% endif %}  out[i] = from_f<act_t>({{ expr }});
}
