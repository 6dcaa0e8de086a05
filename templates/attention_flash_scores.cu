    // S = Q·Kᵀ for the warp's 16 rows × KT keys. Fragments of mma.m16n8k16 (PTX ISA): lane
    // (g, t) holds A rows g, g + 8 at columns 2t, 2t + 1 and 2t + 8, 2t + 9; B column g at rows
    // 2t, 2t + 1 and 2t + 8, 2t + 9; C rows g, g + 8 at columns 2t, 2t + 1.
    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) s[n][i] = 0.f;
{% if score_ldsm %}    // Fragments by ldmatrix (codegen/src/flash.rs `score_ldsm`): q's A fragment from matrices
    // (rows +0, k +0), (rows +8, k +0), (rows +0, k +8), (rows +8, k +8); the B fragments of key
    // columns 8n.. and 8(n + 1).. from the key rows (k contiguous), as linear_mma_pipe reads its
    // weight tile. The same values in the same products as the 32-bit loads below.
    static_assert(NS % 2 == 0, "key columns two tiles at a time");
    const int lm = lane >> 3, lr = lane & 7;
    // This lane's row addresses, converted once; each load adds a constant byte offset.
    const int oq = (wr + (lm & 1) * 8 + lr) * LDQ + (lm >> 1) * 8;
    const int ko = ((lm >> 1) * 8 + lr) * LDK + (lm & 1) * 8;
    const unsigned qa = smem_addr(qh + oq), qla = SPLIT_Q ? smem_addr(ql + oq) : 0u;
    const unsigned ka = smem_addr(kh + ko), kla = SPLIT_KV ? smem_addr(kl + ko) : 0u;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned ah[4], al[4] = {0u, 0u, 0u, 0u};
      ldmatrix_x4(qa + 2 * ks * 16, ah[0], ah[1], ah[2], ah[3]);
      if (SPLIT_Q) ldmatrix_x4(qla + 2 * ks * 16, al[0], al[1], al[2], al[3]);
#pragma unroll
      for (int n = 0; n < NS; n += 2) {
        const unsigned ob = 2 * (n * 8 * LDK + ks * 16);
        unsigned b[4];
        ldmatrix_x4(ka + ob, b[0], b[1], b[2], b[3]);
        mma_{{ tiles }}_16816(s[n], ah, b[0], b[1]);
        if (SPLIT_Q) mma_{{ tiles }}_16816(s[n], al, b[0], b[1]);
        mma_{{ tiles }}_16816(s[n + 1], ah, b[2], b[3]);
        if (SPLIT_Q) mma_{{ tiles }}_16816(s[n + 1], al, b[2], b[3]);
        if (SPLIT_KV) {
          ldmatrix_x4(kla + ob, b[0], b[1], b[2], b[3]);
          mma_{{ tiles }}_16816(s[n], ah, b[0], b[1]);
          mma_{{ tiles }}_16816(s[n + 1], ah, b[2], b[3]);
        }
      }
    }
{% else %}#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const int oa = (wr + g) * LDQ + ks * 16 + 2 * t;
      const unsigned ah[4] = {ld32(qh + oa), ld32(qh + oa + 8 * LDQ), ld32(qh + oa + 8),
                              ld32(qh + oa + 8 * LDQ + 8)};
      unsigned al[4] = {0u, 0u, 0u, 0u};
      if (SPLIT_Q) {
        al[0] = ld32(ql + oa);
        al[1] = ld32(ql + oa + 8 * LDQ);
        al[2] = ld32(ql + oa + 8);
        al[3] = ld32(ql + oa + 8 * LDQ + 8);
      }
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        const int ob = (n * 8 + g) * LDK + ks * 16 + 2 * t;
        const unsigned b0 = ld32(kh + ob), b1 = ld32(kh + ob + 8);
        mma_{{ tiles }}_16816(s[n], ah, b0, b1);
        if (SPLIT_Q) mma_{{ tiles }}_16816(s[n], al, b0, b1);
        if (SPLIT_KV) mma_{{ tiles }}_16816(s[n], ah, ld32(kl + ob), ld32(kl + ob + 8));
      }
    }

{% endif %}    // Scale and causal mask; the online softmax of rows g (i = 0, 1) and g + 8 (i = 2, 3),
    // each row's max over the 4 lanes of its quad.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = k0 + n * 8 + 2 * t + (i & 1);
        const float v = (key <= pos[i >> 1] && key < kend) ? s[n][i] * {{ scale }} : -INFINITY;
        s[n][i] = v;
        mx[i >> 1] = fmaxf(mx[i >> 1], v);
      }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float base = mx[r] == -INFINITY ? 0.f : mx[r];  // a row with no key yet stays empty
      corr[r] = expf(m[r] - base);
      m[r] = mx[r];
      mx[r] = base;
      l[r] *= corr[r];
    }
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float p = expf(s[n][i] - mx[i >> 1]);
        s[n][i] = p;
        l[i >> 1] += p;  // this lane's part of the row sum; the quad's parts add up at the end
      }
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) o[n][i] *= corr[i >> 1];