{% include "prelude.cu" %}
{
  // Depthwise causal conv over time with the conv state as left context (ZAMBA2.md §3.2, §4),
  // {% if silu %}followed by the mixer's SiLU, {% endif %}in parallel over channels (x) and chunks of {{ tch }} tokens (y),
  // sequence blockIdx.z. A thread keeps a register window of the {{ k }} newest inputs; its chunk's
  // first window comes from x where the positions are in this call, else from the state: a ring
  // of the last {{ k }} pre-conv inputs, position q in slot q mod {{ k }} (the layout
  // templates/mamba_step.cu uses; META_POS(b) = position of this call's first token, the ring of
  // slot META_SLOT(b)). The ring is
  // updated afterwards by templates/conv_state_update.cu, so no chunk reads a slot being written.
  const int c = tile * blockDim.x + threadIdx.x;
  const int t0 = blockIdx.y * {{ tch }}, b = blockIdx.z;
  if (c >= {{ channels }} || t0 >= seq) return;
  const int t1 = min(seq, t0 + {{ tch }});
  float w[{{ k }}], win[{{ k }}];
  const long so = ((long)META_SLOT(b) * {{ channels }} + c) * {{ k }};
#pragma unroll
  for (int j = 0; j < {{ k }}; ++j) {
    w[j] = to_f(weight[c * {{ k }} + j]);
    const int q = t0 - {{ k }} + j;  // relative to this call's first token
    win[j] = q >= 0 ? to_f(x[((long)b * seq + q) * {{ x_stride }} + c])
                    : to_f(state[so + ((META_POS(b) + q) % {{ k }} + {{ k }}) % {{ k }}]);
  }
  const float bc = to_f(bias[c]);
  // The chunk's inputs, all loaded before the first output is stored (a store could alias the
  // next input for the compiler, which then waited for each load in turn).
  float xin[{{ tch }}];
#pragma unroll
  for (int i = 0; i < {{ tch }}; ++i)
    xin[i] = t0 + i < t1 ? to_f(x[((long)b * seq + t0 + i) * {{ x_stride }} + c]) : 0.f;
#pragma unroll
  for (int i = 0; i < {{ tch }}; ++i) {
    const int t = t0 + i;
    if (t >= t1) break;
    const long row = (long)b * seq + t;
#pragma unroll
    for (int j = 0; j + 1 < {{ k }}; ++j) win[j] = win[j + 1];
    win[{{ k }} - 1] = xin[i];
    float acc = bc;
#pragma unroll
    for (int j = 0; j < {{ k }}; ++j) acc += w[j] * win[j];
{% if silu %}    out[row * {{ channels }} + c] = from_f<act_t>(silu_f(rnd<act_t>(acc)));  // the conv's SiLU
{% else %}    out[row * {{ channels }} + c] = from_f<act_t>(acc);
{% endif %}  }
}
