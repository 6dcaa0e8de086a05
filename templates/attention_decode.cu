{% include "prelude.cu" %}
{
  // Decode attention, split over the cached positions (flash-decoding; ZAMBA2.md §2.4, §6.3;
  // docs/KERNELS.md "attention_decode"). Block (tile = query head h, blockIdx.y = split s of
  // SPLITS, blockIdx.z = row b of the batch, whose cache is slot META_SLOT(b)); SPLITS is chosen
  // per launch table (16 for one row, fewer for decode_rows, whose rows fill the GPU). The new
  // token's k (RoPE applied) and v are taken from the projections, not from the cache, rounded
  // to the cache's cache_t as if read back from it, and split 0 appends them to the cache: no
  // block uses what it reads of the slot being written. Inside a block, groups of {{ lpk }}
  // lanes take one key each ({{ dpl }} dims per lane, read in loads of VEC elements), with an f32
  // online softmax per group, merged across groups and warps; the splits' partial (max, sum,
  // acc) go to a workspace and the last block of the head to finish (an atomic counter, reset
  // for the next step) merges them.
  constexpr int D = {{ d }}, NW = {{ nw }}, LPK = {{ lpk }}, DPL = {{ dpl }}, KPW = 32 / LPK;
  constexpr int SPLITS = {{ splits }}, VEC = {{ kv_vec }};
  // A VEC-element piece of a lane's span: one aligned VEC * sizeof(cache_t)-byte load
  // (codegen/src/fused/attention.rs kv_vec checks the alignment), elements kept as stored until
  // to_f converts them, so values are those of the scalar reads.
  struct alignas(sizeof(cache_t) * VEC) kvv_t { cache_t e[VEC]; };
  __shared__ float qs[D], kn[D], vn[D];
  __shared__ float wm[NW * KPW], wl[NW * KPW];
{% if ring %}  // The warps' cp.async rings (RING stages of KPW keys and their values each) share their
  // shared memory with the merge's per-group accumulators, which are written only after every
  // warp has left its loop (the barrier after it).
  constexpr int RING = {{ ring }}, STAGE = KPW * D, CHUNK = 16 / (int)sizeof(cache_t);
  constexpr int CPK = D / CHUNK;  // 16-byte chunks of a key row (codegen checks D divides)
  constexpr int RING_BYTES = NW * RING * 2 * STAGE * (int)sizeof(cache_t);
  constexpr int WACC_BYTES = NW * KPW * D * (int)sizeof(float);
  __shared__ alignas(16) unsigned char smem_raw[RING_BYTES > WACC_BYTES ? RING_BYTES : WACC_BYTES];
  float (*wacc)[D] = reinterpret_cast<float (*)[D]>(smem_raw);
{% else %}  __shared__ float wacc[NW * KPW][D];
{% endif %}  __shared__ bool last;
  const int h = tile, s = blockIdx.y, b = blockIdx.z;
  const int kh = h / {{ group }};
  const int pos = META_POS(b), seq_slot = META_SLOT(b);
  const long row = b;
  const long qo = row * {{ q_stride }} + h * D, ko = row * {{ k_stride }} + kh * D,
             vo = row * {{ v_stride }} + kh * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
{% if rope %}    if (c < {{ half }}) {
      const float ang = (float)pos * inv_freq[c];
      const float cs_ = rnd<act_t>(cosf(ang)), sn = rnd<act_t>(sinf(ang));
      float x1 = to_f(q[qo + c]), x2 = to_f(q[qo + c + {{ half }}]);
      qs[c] = rnd<act_t>(x1 * cs_ - x2 * sn);
      qs[c + {{ half }}] = rnd<act_t>(x2 * cs_ + x1 * sn);
      x1 = to_f(k[ko + c]); x2 = to_f(k[ko + c + {{ half }}]);
      kn[c] = rnd<cache_t>(rnd<act_t>(x1 * cs_ - x2 * sn));
      kn[c + {{ half }}] = rnd<cache_t>(rnd<act_t>(x2 * cs_ + x1 * sn));
    }
{% else %}    qs[c] = to_f(q[qo + c]);
    kn[c] = rnd<cache_t>(to_f(k[ko + c]));
{% endif %}    vn[c] = rnd<cache_t>(to_f(v[vo + c]));
  }
  __syncthreads();
  const long kvo = ((long)seq_slot * {{ kv_heads }} + kh) * cap * D;
  if (s == 0 && pos < cap && h % {{ group }} == 0) {
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
      kcache[kvo + (long)pos * D + c] = from_f<cache_t>(kn[c]);
      vcache[kvo + (long)pos * D + c] = from_f<cache_t>(vn[c]);
    }
  }
  const int nk = min(pos + 1, cap);
  const int chunk = (nk + SPLITS - 1) / SPLITS;
  const int j0 = s * chunk, j1 = min(nk, j0 + chunk);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grp = lane / LPK, sub = lane % LPK;
  float qv[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) qv[i] = qs[sub * DPL + i];
  float m = -INFINITY, l = 0.f, acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.f;
  // Key j (valid: inside this split's range) with this lane's span of it and of its value in
  // kc/vc: the score over the group's lanes, then the online softmax update.
  auto consume = [&](const int j, const bool valid, const kvv_t* kc, const kvv_t* vc) {
    const bool fresh = (j == pos);
    float sc = 0.f;
#pragma unroll
    for (int i = 0; i < DPL; ++i)
      sc += qv[i] * (fresh ? kn[sub * DPL + i] : to_f(kc[i / VEC].e[i % VEC]));
#pragma unroll
    for (int o = LPK / 2; o > 0; o >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, o, LPK);
    if (valid) {
      sc *= {{ scale }};
      const float mn = fmaxf(m, sc);
      const float corr = expf(m - mn), pr = expf(sc - mn);
      l = l * corr + pr;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const float vv = fresh ? vn[sub * DPL + i] : to_f(vc[i / VEC].e[i % VEC]);
        acc[i] = acc[i] * corr + pr * vv;
      }
      m = mn;
    }
  };
{% if ring %}  // Each warp streams its keys (KPW a pass, NW * KPW apart) through its own ring of RING
  // stages with cp.async, RING - 1 passes ahead of its math: the loads in flight cost shared
  // memory, not registers (the register-pipelined form below keeps one pass ahead at 116
  // registers a thread, four blocks an SM). A key past the range is zero-filled, never used.
  const cache_t* kbase = kcache + kvo;
  const cache_t* vbase = vcache + kvo;
  cache_t* ring = reinterpret_cast<cache_t*>(smem_raw) + warp * RING * 2 * STAGE;
  const int jw = j0 + warp * KPW;
  const int passes = jw < j1 ? (j1 - jw + NW * KPW - 1) / (NW * KPW) : 0;
  auto issue = [&](const int it) {
    if (it < passes) {
      cache_t* st = ring + (it % RING) * 2 * STAGE;
      const int jb = jw + it * NW * KPW;
      for (int c = lane; c < 2 * KPW * CPK; c += 32) {
        const int kv = c / (KPW * CPK), r = c % (KPW * CPK), key = r / CPK, ch = r % CPK;
        const int j = jb + key;
        const bool ok = j < j1;
        const cache_t* src = (kv ? vbase : kbase) + (long)(ok ? j : j0) * D + ch * CHUNK;
        cp_async16(st + kv * STAGE + key * D + ch * CHUNK, src, ok);
      }
    }
    cp_async_commit();  // a group for every pass, empty or not: the wait counts stay uniform
  };
#pragma unroll 1
  for (int it = 0; it < RING - 1; ++it) issue(it);
#pragma unroll 1
  for (int it = 0; it < passes; ++it) {
    cp_async_wait<RING - 2>();  // this pass's group has landed (this lane's copies)
    __syncwarp();               // ... and every lane's
    const cache_t* ks = ring + (it % RING) * 2 * STAGE + grp * D + sub * DPL;
    const int j = jw + it * NW * KPW + grp;
    consume(j, j < j1, reinterpret_cast<const kvv_t*>(ks), reinterpret_cast<const kvv_t*>(ks + STAGE));
    __syncwarp();  // every lane has read the stage the next copy overwrites
    issue(it + RING - 1);
  }
  cp_async_wait<0>();
  __syncthreads();  // the rings are dead: wacc may take their shared memory
{% else %}  constexpr int NV = DPL / VEC;
  // This lane's span of key jb + grp and of its value, into kx/vx. A group whose key is past
  // the range reads key j0 instead (in range; what it computes is never used).
  const cache_t* kspan = kcache + kvo + sub * DPL;
  const cache_t* vspan = vcache + kvo + sub * DPL;
  auto load = [&](const int jb, kvv_t (&kx)[NV], kvv_t (&vx)[NV]) {
    const int j = jb + grp;
    const long jo = (long)(j < j1 ? j : j0) * D;
    const kvv_t* kp = reinterpret_cast<const kvv_t*>(kspan + jo);
    const kvv_t* vp = reinterpret_cast<const kvv_t*>(vspan + jo);
#pragma unroll
    for (int u = 0; u < NV; ++u) {
      kx[u] = kp[u];
      vx[u] = vp[u];
    }
  };
  // Software pipelined: the next iteration's key and value are loaded before this one's math,
  // so a lane keeps two keys in flight (a block of one row's 16 splits runs only a few
  // iterations). The loop bound is uniform over the warp (every lane takes part in the
  // shuffles); a group whose key is past the range contributes nothing.
  kvv_t kr[NV], vr[NV];
  int jb = j0 + warp * KPW;
  if (jb < j1) load(jb, kr, vr);
  for (; jb < j1; jb += NW * KPW) {
    kvv_t kc[NV], vc[NV];
#pragma unroll
    for (int u = 0; u < NV; ++u) {
      kc[u] = kr[u];
      vc[u] = vr[u];
    }
    if (jb + NW * KPW < j1) load(jb + NW * KPW, kr, vr);
    consume(jb + grp, jb + grp < j1, kc, vc);
  }
{% endif %}  // Per key group (max, sum, acc) -> shared memory; one merge over the block's groups.
  const int slot = warp * KPW + grp;
  if (sub == 0) { wm[slot] = m; wl[slot] = l; }
#pragma unroll
  for (int i = 0; i < DPL; ++i) wacc[slot][sub * DPL + i] = acc[i];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < NW * KPW; ++w) M = fmaxf(M, wm[w]);
  float L = 0.f;
  for (int w = 0; w < NW * KPW; ++w) if (wm[w] != -INFINITY) L += wl[w] * expf(wm[w] - M);
  // Row b's partials start at b * {{ ws_stride }} (the workspace's row stride, at least
  // {{ heads }} * SPLITS * (D + 2)).
  float* part = workspace + (long)b * {{ ws_stride }} + ((long)h * SPLITS + s) * (D + 2);
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < NW * KPW; ++w) if (wm[w] != -INFINITY) o += wacc[w][c] * expf(wm[w] - M);
    part[c] = o;
  }
  if (threadIdx.x == 0) { part[D] = M; part[D + 1] = L; }
  // The last split of this (sequence, head) to finish merges every split.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* ctr = counters + (long)b * {{ heads }} + h;
    last = atomicAdd(ctr, 1) == SPLITS - 1;
    if (last) *ctr = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const float* parts = workspace + (long)b * {{ ws_stride }} + (long)h * SPLITS * (D + 2);
  float GM = -INFINITY;
  for (int t = 0; t < SPLITS; ++t) GM = fmaxf(GM, __ldcg(&parts[t * (D + 2) + D]));
  float GL = 0.f;
  for (int t = 0; t < SPLITS; ++t) {
    const float mt = __ldcg(&parts[t * (D + 2) + D]);
    if (mt != -INFINITY) GL += __ldcg(&parts[t * (D + 2) + D + 1]) * expf(mt - GM);
  }
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float o = 0.f;
    for (int t = 0; t < SPLITS; ++t) {
      const float mt = __ldcg(&parts[t * (D + 2) + D]);
      if (mt != -INFINITY) o += __ldcg(&parts[t * (D + 2) + c]) * expf(mt - GM);
    }
    out[row * {{ out_width }} + h * D + c] = from_f<act_t>(o / GL);
  }
}
