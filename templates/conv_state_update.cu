{% include "prelude.cu" %}
{
  // The conv state after a prompt call (ZAMBA2.md §4): the ring of the last {{ k }} pre-conv inputs
  // (position q in slot q mod {{ k }}) takes this call's newest inputs; slots of older positions
  // keep theirs when the call is shorter than {{ k }}. Runs after templates/causal_conv1d.cu.
  const int c = tile * blockDim.x + threadIdx.x;
  const int b = blockIdx.y;
  if (c >= {{ channels }}) return;
  const long so = ((long)META_SLOT(b) * {{ channels }} + c) * {{ k }};
#pragma unroll
  for (int j = 0; j < {{ k }}; ++j) {
    const int q = seq - {{ k }} + j;
    if (q >= 0) state[so + (META_POS(b) + q) % {{ k }}] = from_f<{{ state_t }}>(to_f(x[((long)b * seq + q) * {{ x_stride }} + c]));
  }
}
