{% include "prelude.cu" %}
{
  // Depthwise causal conv over time with the conv state as left context (ZAMBA2.md §3.2, §4):
  // one thread per (channel, sequence), a register window of the {{ k }} newest inputs. The state
  // [B, {{ channels }}, {{ k }}] is a ring of the last {{ k }} pre-conv inputs: position q in slot
  // q mod {{ k }} (the layout templates/mamba_step.cu reads and writes; meta[0] = position of
  // the first token of this call).
  const int c = tile * blockDim.x + threadIdx.x;
  const int b = blockIdx.y;
  if (c >= {{ channels }}) return;
  float w[{{ k }}], win[{{ k }}];
  const long so = ((long)b * {{ channels }} + c) * {{ k }};
#pragma unroll
  for (int j = 0; j < {{ k }}; ++j) {
    w[j] = to_f(weight[c * {{ k }} + j]);
    win[j] = to_f(state[so + (meta[0] + j) % {{ k }}]);  // position meta[0] - {{ k }} + j
  }
  const float bc = to_f(bias[c]);
  for (int t = 0; t < seq; ++t) {
    const long row = (long)b * seq + t;
#pragma unroll
    for (int j = 0; j + 1 < {{ k }}; ++j) win[j] = win[j + 1];
    win[{{ k }} - 1] = to_f(x[row * {{ x_stride }} + c]);
    float acc = bc;
#pragma unroll
    for (int j = 0; j < {{ k }}; ++j) acc += w[j] * win[j];
{% if silu %}    out[row * {{ channels }} + c] = from_f<act_t>(silu_f(rnd<act_t>(acc)));  // the conv's SiLU
{% else %}    out[row * {{ channels }} + c] = from_f<act_t>(acc);
{% endif %}
  }
#pragma unroll
  for (int j = 0; j < {{ k }}; ++j) state[so + (meta[0] + seq + j) % {{ k }}] = from_f<{{ state_t }}>(win[j]);
}
