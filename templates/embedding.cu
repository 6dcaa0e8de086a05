{% include "prelude.cu" %}
{
  // weight[ids] (ZAMBA2.md §2.1); an id outside the vocabulary gives a zero row.
  const long r = tile;
  const i32 id = ids[r];
  act_t* o = out + r * {{ width }};
  if (id < 0 || id >= {{ vocab }}) {
    for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x) o[c] = from_f<act_t>(0.f);
    return;
  }
  const long base = (long)id * {{ width }};
  for (int c = threadIdx.x; c < {{ width }}; c += blockDim.x) o[c] = from_f<act_t>(to_f(weight[base + c]));
}
