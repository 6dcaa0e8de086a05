{% include "prelude.cu" %}
{
  // Appends k (after RoPE when enabled) and v of every new token to the KV cache
  // [slots, {{ kv_heads }}, cap, {{ d }}] of sequence b's slot at absolute position META_POS(b) + t (ZAMBA2.md §2.4, §4),
  // rounded to the activation dtype as the op's output, then stored as the cache's cache_t.
  const long r = tile;
  const int kh = blockIdx.y;
  const int b = (int)(r / seq), t = (int)(r % seq);
  const int pos = META_POS(b) + t;
  if (pos >= cap) return;
{% if rope %}  // Channels c and c + {{ half }} of the k head at ko, rotated to position pos, into the cache row at dst.
  auto rope_pair = [&](long dst, long ko, int c) {
    const float ang = (float)pos * inv_freq[c];
    const float cs = rnd<act_t>(cosf(ang)), sn = rnd<act_t>(sinf(ang));
    const float x1 = to_f(k[ko + c]), x2 = to_f(k[ko + c + {{ half }}]);
    kcache[dst + c] = from_f<cache_t>(rnd<act_t>(x1 * cs - x2 * sn));
    kcache[dst + c + {{ half }}] = from_f<cache_t>(rnd<act_t>(x2 * cs + x1 * sn));
  };
{% endif %}  const long dst = (((long)META_SLOT(b) * {{ kv_heads }} + kh) * cap + pos) * {{ d }};
  const long ko = r * {{ k_stride }} + kh * {{ d }}, vo = r * {{ v_stride }} + kh * {{ d }};
  for (int c = threadIdx.x; c < {{ d }}; c += blockDim.x) {
    vcache[dst + c] = from_f<cache_t>(to_f(v[vo + c]));
{% if rope %}    if (c < {{ half }}) rope_pair(dst, ko, c);
{% else %}    kcache[dst + c] = from_f<cache_t>(to_f(k[ko + c]));
{% endif %}  }
}
