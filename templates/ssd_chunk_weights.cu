  // (Included by ssd_chunk_state.cu and ssd_chunk_state_mma.cu.) dt of each token of the chunk
  // (softplus of dt + bias, the prompt path's clamp), its cumulative dt·A `cs` (both to `ws`
  // for steps 2 and 3), and the weight w_s = exp(cs_last − cs_s) · dt_s of each token's
  // contribution to the chunk's state, in the shared arrays dv, av and w.
  const float A = -expf(to_f(a_log[h]));
  const float dtb = to_f(dt_bias[h]);
  for (int s = tid; s < L; s += NT) {
    float d = 0.f;
    if (s < lc) {
      d = softplus_f(to_f(dt[(row0 + s) * {{ dt_stride }} + h]) + dtb);
{% if clamp %}      d = fmaxf(d, {{ dt_min }});  // HF 5.24 clamps on the prompt path only (§3.5)
{% endif %}    }
    dv[s] = d;
    av[s] = d * A;
  }
  __syncthreads();
  for (int s = tid; s < lc; s += NT) {
    float acc = 0.f;
    for (int u = 0; u <= s; ++u) acc += av[u];
    w[s] = acc;
    ws[(row0 + s) * (2 * H) + h] = dv[s];
    ws[(row0 + s) * (2 * H) + H + h] = acc;
  }
  __syncthreads();
  const float cl = w[lc - 1];
  __syncthreads();
  for (int s = tid; s < L; s += NT) w[s] = s < lc ? expf(cl - w[s]) * dv[s] : 0.f;
  __syncthreads();
