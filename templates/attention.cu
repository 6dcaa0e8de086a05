{% include "prelude.cu" %}
{
  // Causal attention of one query (head h, row r) over the cache, GQA group {{ group }},
  // scale {{ scale }} (ZAMBA2.md §2.4, §6.3). Warps take keys round-robin with an online
  // softmax in f32; the {{ nw }} partial results merge through shared memory.
  __shared__ float qs[{{ d }}];
  __shared__ float sm[{{ nw }}], sl[{{ nw }}];
  __shared__ float sacc[{{ nw }}][{{ d }}];
  const int h = tile;
  const long r = blockIdx.y;
  const int b = (int)(r / seq), t = (int)(r % seq);
  const int pos = META_POS(b) + t;
  const int kh = h / {{ group }};
  const long qo = r * {{ q_stride }} + h * {{ d }};
  for (int c = threadIdx.x; c < {{ d }}; c += blockDim.x) {
{% if rope %}    if (c < {{ half }}) {
      const float ang = (float)pos * inv_freq[c];
      const float cs = rnd<act_t>(cosf(ang)), sn = rnd<act_t>(sinf(ang));
      const float x1 = to_f(q[qo + c]), x2 = to_f(q[qo + c + {{ half }}]);
      qs[c] = rnd<act_t>(x1 * cs - x2 * sn);
      qs[c + {{ half }}] = rnd<act_t>(x2 * cs + x1 * sn);
    }
{% else %}    qs[c] = to_f(q[qo + c]);
{% endif %}  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long kvo = ((long)META_SLOT(b) * {{ kv_heads }} + kh) * cap * {{ d }};
  const int nk = min(pos + 1, cap);
  float m = -INFINITY, l = 0.f, acc[{{ dd }}];
#pragma unroll
  for (int i = 0; i < {{ dd }}; ++i) acc[i] = 0.f;
  for (int j = warp; j < nk; j += {{ nw }}) {
    const long jo = kvo + (long)j * {{ d }};
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < {{ dd }}; ++i) {
      const int c = lane + 32 * i;
      if (c < {{ d }}) s += qs[c] * to_f(kcache[jo + c]);
    }
    s = warp_sum(s) * {{ scale }};
    const float mn = fmaxf(m, s);
    const float corr = expf(m - mn), pr = expf(s - mn);
    l = l * corr + pr;
#pragma unroll
    for (int i = 0; i < {{ dd }}; ++i) {
      const int c = lane + 32 * i;
      if (c < {{ d }}) acc[i] = acc[i] * corr + pr * to_f(vcache[jo + c]);
    }
    m = mn;
  }
  if (lane == 0) { sm[warp] = m; sl[warp] = l; }
#pragma unroll
  for (int i = 0; i < {{ dd }}; ++i) {
    const int c = lane + 32 * i;
    if (c < {{ d }}) sacc[warp][c] = acc[i];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < {{ nw }}; ++w) M = fmaxf(M, sm[w]);
  float L = 0.f;
  for (int w = 0; w < {{ nw }}; ++w) if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
  const long oo = r * {{ out_width }} + h * {{ d }};
  for (int c = threadIdx.x; c < {{ d }}; c += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < {{ nw }}; ++w) if (sm[w] != -INFINITY) o += sacc[w][c] * expf(sm[w] - M);
    out[oo + c] = from_f<act_t>(o / L);
  }
}
