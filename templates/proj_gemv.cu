{% include "prelude.cu" %}
{
  // Fused projection for few rows (decode), docs/KERNELS.md "proj_gemv": each warp owns {{ rpw }}
  // consecutive output features and streams their weight rows once with 16-byte loads, several
  // loads in flight per lane. The input is read in {{ segs | length }} segment(s); when the op
  // normalises its input (RMSNorm, the gated norm's group norm, the shared block's split norm),
  // the warp accumulates Σx² per norm group on the same pass and applies the 1/rms scale after
  // the reduction: out = Σ_g inv_g · Σ_{k∈g} W[n,k]·γ[k]·x[k] (f32 throughout).
  // {{ ks }} warps split the input of one row group (interleaved 16-byte chunks) and combine
  // their partial sums through shared memory, so narrow outputs still fill the GPU.
{% if plain %}  // The same address through a move the compiler cannot see into: loads from it are plain
  // (not read-only-cache loads it may issue all up front; codegen/src/fused/gemv.rs segs).
#define Z2C_PLAIN(p, T) do { unsigned long long v_; asm("mov.b64 %0, %1;" : "=l"(v_) : "l"(p)); p = reinterpret_cast<T>(v_); } while (0)
{% if norm != "none" %}  auto gamma_p = gamma;  // the norm weight's own dtype (bf16, f16 or f32)
  Z2C_PLAIN(gamma_p, decltype(gamma_p));
{% endif %}{% endif %}  constexpr int KS = {{ ks }}, GROUPS = {{ warps }} / KS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rg = warp / KS, kp = warp % KS;
  const int o0 = (tile * GROUPS + rg) * {{ rpw }};
{% if ks > 1 %}  __shared__ float red[{{ warps }}][{{ rg }} * ({{ wr }} * {{ ng }} + {{ nss }})];
{% else %}  if (o0 >= {{ nout }}) return;
{% endif %}
  // Weight rows this warp reads: output feature o reads row o{% if gelu_mul %} (gate) and row o + {{ inter }} (up){% endif %}.
  const w_t* wrow[{{ wr }}];
#pragma unroll
  for (int i = 0; i < {{ wr }}; ++i) {
    // Rows past the output (the last warp of an odd width) read row 0 and are never stored.
    const int oi = o0 + (i % {{ rpw }}) < {{ nout }} ? o0 + (i % {{ rpw }}) : 0;
    const int n = {% if gelu_mul %}(i < {{ rpw }}) ? oi : oi + {{ inter }}{% else %}oi{% endif %};
    wrow[i] = {{ projs[0].w }};
{% for p in projs %}    {% if not loop.first %}else {% endif %}if (n < {{ p.end }}) wrow[i] = {{ p.w }} + (long)(n - {{ p.start }}) * {{ p.w_stride }};
{% endfor %}{% if plain_w %}    Z2C_PLAIN(wrow[i], const w_t*);
{% endif %}  }
  // Programmatic dependent launch (z2c_common.cuh): the previous launch's output is this one's
  // input. (Asking L2 for the first weight lines before this wait in every projection was
  // measured slower: 2.66 vs 2.55 ms per token with 1 KB per row, docs/PERFORMANCE.md.)
{% if pf_lines > 0 %}  // This one follows a launch that moves few bytes (codegen/src/fused/gemv.rs Input): the
  // first {{ pf_lines }} 128-byte lines of each weight row are asked into L2 while it runs.
#pragma unroll 1
  for (int l = lane + 32 * kp; l < {{ wr }} * {{ pf_lines }}; l += 32 * KS)
    prefetch_l2(reinterpret_cast<const char*>(wrow[l / {{ pf_lines }}] + {{ pf_col }}) + 128 * (l % {{ pf_lines }}));
{% endif %}  z2c_grid_wait();
  // Rows go in groups of R = {{ rg }}: each weight chunk a lane loads serves every row of the
  // group (per-row accumulators), so a group costs the weight bytes of one row. Rows past the
  // end of the last group re-read row m0 and are never stored.
  constexpr int R = {{ rg }};
  for (int m0 = 0; m0 < rows; m0 += R) {
    float acc[R][{{ wr }}][{{ ng }}];
    float ss[R][{{ nss }}];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int i = 0; i < {{ wr }}; ++i)
#pragma unroll
        for (int g = 0; g < {{ ng }}; ++g) acc[r][i][g] = 0.f;
#pragma unroll
      for (int g = 0; g < {{ nss }}; ++g) ss[r][g] = 0.f;
    }
{% for s in segs %}    {
      // segment {{ loop.index0 }}: {{ s.len }} inputs of {{ s.x }} from column {{ s.xoff }}{% if s.read_w %}, weight columns {{ s.wcol }}..{% endif %}{% if norm != "none" %}, norm group {{ s.grp }}{% endif %}
      const x_t* xs[R];
#pragma unroll
      for (int r = 0; r < R; ++r) xs[r] = {{ s.x }} + (long)(m0 + r < rows ? m0 + r : m0) * {{ s.x_stride }} + {{ s.xoff }};
{% if plain %}#pragma unroll
      for (int r = 0; r < R; ++r) Z2C_PLAIN(xs[r], const x_t*);
      // {{ s.trips }} passes of 32·KS lanes, a count known here (codegen/src/fused/gemv.rs segs).
#pragma unroll {{ s.unroll }}
      for (int it = 0; it < {{ s.trips }}; ++it) {
        const int c = lane + 32 * kp + it * 32 * KS;
{% if s.ragged %}        if (c >= {{ s.len }} / {{ vec }}) break;
{% endif %}{% else %}#pragma unroll {{ s.unroll }}
      for (int c = lane + 32 * kp; c < {{ s.len }} / {{ vec }}; c += 32 * KS) {
{% endif %}        const int k = c * {{ vec }};
        float xv[R][{{ vec }}];
#pragma unroll
        for (int r = 0; r < R; ++r) loadv(xs[r] + k, xv[r]);
{% if norm != "none" %}        float gv[{{ vec }}];
        loadv({% if plain %}gamma_p{% else %}gamma{% endif %} + {{ s.goff }} + k, gv);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int j = 0; j < {{ vec }}; ++j) {
            ss[r][{{ s.ss }}] += xv[r][j] * xv[r][j];
            xv[r][j] *= gv[j];
          }
{% endif %}{% if s.read_w %}#pragma unroll
        for (int i = 0; i < {{ wr }}; ++i) {
          float wv[{{ vec }}];
          loadv(wrow[i] + {{ s.wcol }} + k, wv);
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int j = 0; j < {{ vec }}; ++j) acc[r][i][{{ s.grp }}] += wv[j] * xv[r][j];
        }
{% endif %}      }
    }
{% endfor %}    // The weights are streamed: the next launch's blocks may come in and reach their wait.
    if (m0 + R >= rows) z2c_launch_dependents();
#pragma unroll
    for (int r = 0; r < R; ++r) {
{% if norm != "none" %}#pragma unroll
      for (int g = 0; g < {{ nss }}; ++g) ss[r][g] = warp_sum(ss[r][g]);
{% endif %}#pragma unroll
      for (int i = 0; i < {{ wr }}; ++i)
#pragma unroll
        for (int g = 0; g < {{ ng }}; ++g) acc[r][i][g] = warp_sum(acc[r][i][g]);
    }
{% if ks > 1 %}    // Combine the {{ ks }} warps of this row group; the first of them finishes the rows.
    constexpr int RED = {{ wr }} * {{ ng }} + {{ nss }};
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int i = 0; i < {{ wr }}; ++i)
#pragma unroll
          for (int g = 0; g < {{ ng }}; ++g) red[warp][r * RED + i * {{ ng }} + g] = acc[r][i][g];
#pragma unroll
        for (int g = 0; g < {{ nss }}; ++g) red[warp][r * RED + {{ wr }} * {{ ng }} + g] = ss[r][g];
      }
    }
    __syncthreads();
    const bool finisher = kp == 0 && o0 < {{ nout }};
    if (finisher) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int i = 0; i < {{ wr }}; ++i)
#pragma unroll
          for (int g = 0; g < {{ ng }}; ++g) {
            float v = 0.f;
            for (int w = 0; w < KS; ++w) v += red[rg * KS + w][r * RED + i * {{ ng }} + g];
            acc[r][i][g] = v;
          }
#pragma unroll
        for (int g = 0; g < {{ nss }}; ++g) {
          float v = 0.f;
          for (int w = 0; w < KS; ++w) v += red[rg * KS + w][r * RED + {{ wr }} * {{ ng }} + g];
          ss[r][g] = v;
        }
      }
    }
    __syncthreads();  // red is reused by the next row group
    if (!finisher) continue;
{% endif %}#pragma unroll
    for (int r = 0; r < R; ++r) {
    const int m = m0 + r;
    if (m < rows) {
{% if norm == "rms" %}    float inv[{{ ng }}];
{% for s in gsize %}    inv[{{ loop.index0 }}] = 1.f / sqrtf(ss[r][{{ loop.index0 }}] / {{ s }}.f + {{ eps }});
{% endfor %}{% elif norm == "split" %}    // RMS over [h, e] (2·{{ half }} values); the embedding half E was normalised by its own RMS
    // (embed_half_proj), so it is rescaled by rms(e) / rms([h, e]) (ir/src/op.rs SplitNormLinear).
    const float inv_he = 1.f / sqrtf((ss[r][0] + ss[r][1]) / {{ full }}.f + {{ eps }});
    const float rms_e = sqrtf(ss[r][1] / {{ half }}.f + {{ eps }});
{% endif %}    float y[{{ wr }}];
#pragma unroll
    for (int i = 0; i < {{ wr }}; ++i) {
{% if norm == "rms" %}      float v = 0.f;
#pragma unroll
      for (int g = 0; g < {{ ng }}; ++g) v += acc[r][i][g] * inv[g];
      y[i] = v;
{% elif norm == "split" %}      y[i] = acc[r][i][0] * inv_he;
{% else %}      y[i] = acc[r][i][0];
{% endif %}    }
{% if split_e %}#pragma unroll
    for (int i = 0; i < {{ rpw }}; ++i)
      if (o0 + i < {{ nout }}) y[i] += inv_he * rms_e * to_f(emb_half[(long)m * {{ e_stride }} + o0 + i]);
{% endif %}{% if adapter %}    // LoRA: y += B[n, :]·a with a = A·x̂ from the previous launch ({{ rank }} values per projection).
#pragma unroll
    for (int i = 0; i < {{ wr }}; ++i) {
      const int oi = o0 + (i % {{ rpw }}) < {{ nout }} ? o0 + (i % {{ rpw }}) : 0;
      const int n = {% if gelu_mul %}(i < {{ rpw }}) ? oi : oi + {{ inter }}{% else %}oi{% endif %};
      const w_t* brow = nullptr;
      int aoff = 0;
{% for p in projs %}{% if p.b %}      {% if not loop.first %}else {% endif %}if (n >= {{ p.start }} && n < {{ p.end }}) { brow = {{ p.b }} + (long)(n - {{ p.start }}) * {{ rank }}; aoff = {{ p.aoff }}; }
{% endif %}{% endfor %}      float l = 0.f;
      if (brow != nullptr)
        for (int r = lane; r < {{ rank }}; r += 32) l += to_f(brow[r]) * lora_a[(long)m * {{ a_stride }} + aoff + r];
      l = warp_sum(l);
      if (brow != nullptr) y[i] = rnd<act_t>(rnd<act_t>(y[i]) + rnd<act_t>(l));
    }
{% endif %}    if (lane < {{ rpw }}) {
      // Lane i stores output feature o0 + i (register arrays indexed by constants only).
#pragma unroll
      for (int i = 0; i < {{ rpw }}; ++i) {
        if (lane != i || o0 + i >= {{ nout }}) continue;
{% if gelu_mul %}        float v = rnd<act_t>(rnd<act_t>(gelu_f(rnd<act_t>(y[i]))) * rnd<act_t>(y[i + {{ rpw }}]));
{% else %}        float v = rnd<act_t>(y[i]);
{% endif %}{% if residual %}        v = to_f(res[(long)m * {{ res_stride }} + o0 + i]) + v;
{% endif %}        out[(long)m * {{ out_stride }} + o0 + i] = from_f<out_t>(v);
      }
    }
    }
    }
  }
}
