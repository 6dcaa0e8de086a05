{% include "prelude.cu" %}
{
  // Concatenation along the last axis (ZAMBA2.md §2.3: [current hidden, embeddings]).
  const long i = (long)tile * blockDim.x + threadIdx.x;
  if (i >= (long)rows * {{ width }}) return;
  const long r = i / {{ width }};
  const int c = (int)(i - r * {{ width }});
  float v;
{% for p in parts %}  {% if not loop.first %}else {% endif %}if (c < {{ p.end }}) v = to_f(in{{ loop.index0 }}[r * {{ p.stride }} + (c - {{ p.start }})]);
{% endfor %}  out[i] = from_f<act_t>(v);
}
