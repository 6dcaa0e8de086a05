{% include "prelude.cu" %}
{
  // Causal prompt attention, flash style (docs/KERNELS.md "attention_flash"; ZAMBA2.md §2.4,
  // §6.3): block = ({{ qt }} query rows of head h, sequence b), 4 warps of 16 rows. The chunk's
  // queries continue after META_POS(b) cached tokens, so row t sits at position META_POS(b) + t and
  // attends keys 0 ..= that position of the KV cache (which kv_append filled before this
  // launch). Key tiles of {{ kt }} are staged in dynamic shared memory as {{ tiles }} (f16 with an f16
  // cache, else bf16); Q·Kᵀ and P·V run on tensor cores (mma.sync m16n8k16, f32 accumulation);
  // the softmax is online, in f32. Operands that are not exactly of the tiles' type (f32
  // values, the unnormalised probabilities P) are split as x = hi + lo, both of that type, and
  // the products summed as hi·hi + hi·lo + lo·hi (~16 mantissa bits with bf16, ~22 with f16;
  // the lo·lo term is below f32 rounding of the sum).
  constexpr int D = {{ d }}, HALF = {{ half }}, QT = {{ qt }}, KT = {{ kt }}, NT = {{ block }};
  constexpr int LDQ = D + 8, LDK = D + 8, LDV = KT + 8;  // 16-bit row pitches: +8 (16 bytes)
  // makes each fragment load of 8 rows × 4 words hit 32 different banks.
  constexpr int KS = D / 16, NS = KT / 8, ND = D / 8;
  constexpr bool SPLIT_Q = {{ split_q }}, SPLIT_KV = {{ split_kv }}, SPLIT_P = {{ split_p }};
  static_assert(D % 16 == 0 && KT % 16 == 0 && NT == 2 * QT, "attention_flash's fragment mapping");
  typedef {% if tiles == "f16" %}half_t{% else %}bf16_t{% endif %} tile_t;
  extern __shared__ __align__(16) unsigned short smem[];
  unsigned short* qh = smem;                          // [QT][LDQ]: q (RoPE applied), hi
  unsigned short* ql = qh + QT * LDQ;                 // lo (only when SPLIT_Q)
{% if kv_async %}  // A {{ tiles }} cache is copied as it is stored: two stages of key and value tiles, [KT][LDK] each
  // (values by key, read transposed by ldmatrix), the next tile in flight while one is used.
  constexpr int ST = 2;
  static_assert(!SPLIT_KV && D % 8 == 0, "attention_flash's cp.async tiles");
  unsigned short* kbuf = ql + (SPLIT_Q ? QT * LDQ : 0); // [ST][KT][LDK]: key tiles
  unsigned short* vbuf = kbuf + ST * KT * LDK;          // [ST][KT][LDK]: value tiles
{% else %}  unsigned short* kh = ql + (SPLIT_Q ? QT * LDQ : 0); // [KT][LDK]: key tile, hi
  unsigned short* kl = kh + KT * LDK;                 // lo (only when SPLIT_KV)
  unsigned short* vh = kl + (SPLIT_KV ? KT * LDK : 0);// [D][LDV]: value tile transposed, hi
  unsigned short* vl = vh + D * LDV;                  // lo (only when SPLIT_KV)
{% endif %}
  const int h = tile, b = blockIdx.z;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * QT;  // the longest (last) query tiles start first
  const int kvh = h / {{ group }};
  const int p0 = META_POS(b);
  const int nq = min(QT, seq - q0);                  // rows of this tile inside the chunk
  const int kend = min(p0 + q0 + nq, cap);           // keys any row of the tile attends: [0, kend)
  const long row0 = (long)b * seq + q0;
  const long kvo = ((long)META_SLOT(b) * {{ kv_heads }} + kvh) * cap * D;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;

  // x as its tile_t hi part (and lo part when `split`) at element o of hi / lo.
  auto put = [](unsigned short* hi, unsigned short* lo, int o, float x, bool split) {
    const tile_t xh = from_f<tile_t>(x);
    hi[o] = xh.bits;
    if (split) {
      float r = x - to_f(xh);
      if (!(r == r)) r = 0.f;  // inf stays in hi
      lo[o] = from_f<tile_t>(r).bits;
    }
  };
  // x0, x1 at elements o, o + 1 (o even): one 32-bit store per part.
  auto put2 = [](unsigned short* hi, unsigned short* lo, int o, float x0, float x1, bool split) {
    unsigned h, l;
    split_{{ tiles }}x2(x0, x1, h, l);
    *reinterpret_cast<unsigned*>(hi + o) = h;
    if (split) *reinterpret_cast<unsigned*>(lo + o) = l;
  };
  auto ld32 = [](const unsigned short* p) { return *reinterpret_cast<const unsigned*>(p); };

  // q of the tile's rows, RoPE applied and rounded to the activation dtype as transformers does.
  for (int e = tid; e < QT * HALF; e += NT) {
    const int r = e / HALF, c = e % HALF;
    float y1 = 0.f, y2 = 0.f;
    if (r < nq) {
      const long qo = (row0 + r) * {{ q_stride }} + h * D;
      const float x1 = to_f(q[qo + c]), x2 = to_f(q[qo + c + HALF]);
{% if rope %}      const float ang = (float)(p0 + q0 + r) * inv_freq[c];
      const float cs = rnd<act_t>(cosf(ang)), sn = rnd<act_t>(sinf(ang));
      y1 = rnd<act_t>(x1 * cs - x2 * sn);
      y2 = rnd<act_t>(x2 * cs + x1 * sn);
{% else %}      y1 = x1;
      y2 = x2;
{% endif %}    }
    put(qh, ql, r * LDQ + c, y1, SPLIT_Q);
    put(qh, ql, r * LDQ + c + HALF, y2, SPLIT_Q);
  }

  // This lane's rows (g and g + 8 of its warp's 16) and their positions; rows past the chunk
  // compute on zeros and are not written.
  const int wr = warp * 16;
  const int pos[2] = {p0 + q0 + wr + g, p0 + q0 + wr + g + 8};
  const int wlast = p0 + q0 + min(wr + 15, nq - 1);  // the warp's last valid position
  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

{% if kv_async %}  // Tile i of keys [i·KT, i·KT + KT) into stage i % 2: 16-byte copies of 8 elements; keys past
  // `kend` are zero-filled (their probabilities are 0, and 0 · a stale value could be NaN).
  auto issue = [&](int i) {
    constexpr int CH = D / 8;
    unsigned short* kd = kbuf + (i & 1) * KT * LDK;
    unsigned short* vd = vbuf + (i & 1) * KT * LDK;
    for (int e = tid; e < KT * CH; e += NT) {
      const int j = e / CH, c = (e % CH) * 8, key = i * KT + j;
      const bool ok = key < kend;
      const long off = kvo + (long)(ok ? key : 0) * D + c;
      cp_async16(kd + j * LDK + c, kcache + off, ok);
      cp_async16(vd + j * LDK + c, vcache + off, ok);
    }
  };
  if (kend > 0) issue(0);
  cp_async_commit();
  for (int k0 = 0, it = 0; k0 < kend; k0 += KT, ++it) {
    if (k0 + KT < kend) issue(it + 1);  // its stage was last read before the previous barrier
    cp_async_commit();
    cp_async_wait<1>();                 // tile `it` has landed (this thread's copies)
    __syncthreads();                    // ... and everyone's; q is staged
    const unsigned short* kh = kbuf + (it & 1) * KT * LDK;
    const unsigned short* kl = kh;  // no lo part: SPLIT_KV is false here
    const unsigned short* vt = vbuf + (it & 1) * KT * LDK;
    if (wr < nq && k0 <= wlast) {  // else every key of the tile is in this warp's future
{% include "attention_flash_scores.cu" %}

    // O += P·V: the C fragments of S for keys 16kk .. 16kk + 15 are the A fragment of P; the B
    // fragments (keys 2t, 2t + 1 and 2t + 8, 2t + 9 of value column g) come from the value
    // rows by ldmatrix.trans: matrices (keys +0, +8) × (columns +0, +8) of each 16 × 16 block.
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
{% include "attention_flash_p.cu" %}
      const int mat = lane >> 3, r = lane & 7;
{% if score_ldsm %}      // This lane's value row address, converted once (codegen/src/flash.rs `score_ldsm`).
      const unsigned va = smem_addr(vt + ((mat & 1) * 8 + r) * LDK + (mat >> 1) * 8);
{% endif %}#pragma unroll
      for (int n = 0; n < ND; n += 2) {
        unsigned vb[4];  // B fragments of value columns 8n.. and 8(n + 1)..
{% if score_ldsm %}        ldmatrix_x4_trans(va + 2 * (kk * 16 * LDK + n * 8), vb[0], vb[1], vb[2], vb[3]);
{% else %}        ldmatrix_x4_trans(vt + (kk * 16 + (mat & 1) * 8 + r) * LDK + (n + (mat >> 1)) * 8, vb[0], vb[1],
                          vb[2], vb[3]);
{% endif %}        mma_{{ tiles }}_16816(o[n], ph, vb[0], vb[1]);
        mma_{{ tiles }}_16816(o[n + 1], ph, vb[2], vb[3]);
        if (SPLIT_P) {
          mma_{{ tiles }}_16816(o[n], pl, vb[0], vb[1]);
          mma_{{ tiles }}_16816(o[n + 1], pl, vb[2], vb[3]);
        }
      }
    }
    }
    __syncthreads();  // every warp is done with this stage before tile it + 2 refills it
  }
  cp_async_wait<0>();
{% else %}  for (int k0 = 0; k0 < kend; k0 += KT) {
    __syncthreads();  // the previous tile's fragments are read (and, first, q is staged)
    // K tile: one key row × 2 adjacent columns per thread (coalesced reads, 32-bit stores).
    for (int e = tid; e < KT * HALF; e += NT) {
      const int j = e / HALF, c = 2 * (e % HALF);
      float x[2] = {0.f, 0.f};  // two adjacent cache elements (c even, D even) in one load
      if (k0 + j < kend) ld2(kcache + kvo + (long)(k0 + j) * D + c, x);
      put2(kh, kl, j * LDK + c, x[0], x[1], SPLIT_KV);
    }
    // V tile transposed (column-major B operand of P·V): a thread takes keys 2j, 2j + 1 of
    // columns c, c + 1 and stores two key pairs; 8 key pairs × 4 column pairs per warp keep
    // the transposed stores on distinct banks.
    for (int e = tid; e < (KT / 2) * HALF; e += NT) {
      const int jl = e & 7, cp = (e >> 3) & 3, rest = e >> 5;
      const int c = (rest % (D / 8)) * 8 + 2 * cp, j = 2 * ((rest / (D / 8)) * 8 + jl);
      float v[2][2] = {};  // v[a][b]: key j + a, column c + b
      if (k0 + j < kend) ld2(vcache + kvo + (long)(k0 + j) * D + c, v[0]);
      if (k0 + j + 1 < kend) ld2(vcache + kvo + (long)(k0 + j + 1) * D + c, v[1]);
      put2(vh, vl, c * LDV + j, v[0][0], v[1][0], SPLIT_KV);
      put2(vh, vl, (c + 1) * LDV + j, v[0][1], v[1][1], SPLIT_KV);
    }
    __syncthreads();
    if (wr >= nq || k0 > wlast) continue;  // every key of the tile is in this warp's future

{% include "attention_flash_scores.cu" %}

    // O += P·V: the C fragments of S for keys 16kk .. 16kk + 15 are the A fragment of P.
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
{% include "attention_flash_p.cu" %}
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        const int ob = (n * 8 + g) * LDV + kk * 16 + 2 * t;
        const unsigned b0 = ld32(vh + ob), b1 = ld32(vh + ob + 8);
        mma_{{ tiles }}_16816(o[n], ph, b0, b1);
        if (SPLIT_P) mma_{{ tiles }}_16816(o[n], pl, b0, b1);
        if (SPLIT_KV) mma_{{ tiles }}_16816(o[n], ph, ld32(vl + ob), ld32(vl + ob + 8));
      }
    }
  }
{% endif %}
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = wr + g + 8 * r;
    if (row >= nq) continue;
    const long oo = (row0 + row) * {{ out_stride }} + h * D;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      out[oo + n * 8 + 2 * t] = from_f<act_t>(o[n][2 * r] / l[r]);
      out[oo + n * 8 + 2 * t + 1] = from_f<act_t>(o[n][2 * r + 1] / l[r]);
    }
  }
}
