{% include "prelude.cu" %}
{
  // Mamba2 SSM recurrence, sequential over time (ZAMBA2.md §3.2, §3.5), f32 math; the state is
  // stored as ssm_t (`compile --state-dtype`), rounded once at the end of the call.
  // One block per (head, sequence); warp w owns head rows p = w, w+{{ nw }}, ...; lane l owns
  // state columns n = l, l+32, ... The state [B, {{ heads }}, {{ head_dim }}, {{ d_state }}] lives in registers.
  const int h = tile, b = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = h / {{ heads_per_group }};
  const float A = -expf(to_f(a_log[h]));
  const float Dh = to_f(d_skip[h]);
  const float dtb = to_f(dt_bias[h]);
  ssm_t* st = state + ((long)META_SLOT(b) * {{ heads }} + h) * {{ pn }};  // slot of row b
  float s[{{ pp }}][{{ nn }}];
#pragma unroll
  for (int i = 0; i < {{ pp }}; ++i) {
    const int p = warp + i * {{ nw }};
#pragma unroll
    for (int j = 0; j < {{ nn }}; ++j) {
      const int n = lane + j * 32;
      s[i][j] = (p < {{ head_dim }} && n < {{ d_state }}) ? to_f(st[p * {{ d_state }} + n]) : 0.f;
    }
  }
  for (int t = 0; t < seq; ++t) {
    const long row = (long)b * seq + t;
    float dtv = softplus_f(to_f(dt[row * {{ dt_stride }} + h]) + dtb);
{% if clamp %}    dtv = fmaxf(dtv, {{ dt_min }});  // HF 5.24 clamps on the prompt path only (§3.5)
{% endif %}    const float dA = expf(dtv * A);
    float bn[{{ nn }}], cn[{{ nn }}];
#pragma unroll
    for (int j = 0; j < {{ nn }}; ++j) {
      const int n = lane + j * 32;
      bn[j] = n < {{ d_state }} ? to_f(bm[row * {{ b_stride }} + g * {{ d_state }} + n]) : 0.f;
      cn[j] = n < {{ d_state }} ? to_f(cm[row * {{ c_stride }} + g * {{ d_state }} + n]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < {{ pp }}; ++i) {
      const int p = warp + i * {{ nw }};
      if (p < {{ head_dim }}) {
        const float xv = to_f(x[row * {{ x_stride }} + h * {{ head_dim }} + p]);
        const float dx = dtv * xv;
        float y = 0.f;
#pragma unroll
        for (int j = 0; j < {{ nn }}; ++j) {
          s[i][j] = s[i][j] * dA + dx * bn[j];
          y += s[i][j] * cn[j];
        }
        y = warp_sum(y);
        if (lane == 0) out[row * {{ out_width }} + h * {{ head_dim }} + p] = from_f<act_t>(y + Dh * xv);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < {{ pp }}; ++i) {
    const int p = warp + i * {{ nw }};
#pragma unroll
    for (int j = 0; j < {{ nn }}; ++j) {
      const int n = lane + j * 32;
      if (p < {{ head_dim }} && n < {{ d_state }}) st[p * {{ d_state }} + n] = from_f<ssm_t>(s[i][j]);
    }
  }
}
