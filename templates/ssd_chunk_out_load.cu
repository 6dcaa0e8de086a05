  // (Included by ssd_chunk_out.cu, which lays the tiles out in shared memory: C_t[n] at
  // cmat[t·CR + n·CC] and B_s[n] likewise in bmat, x_t[p] at xmat[t·XR + p], the entering state
  // S[n][p] at smat[n·SR + p]; unpadded rows are indexed by e itself.) Each token's dt and cs
  // (step 1's `ws`), C, B and x of the chunk's rows (zero past lc) and the state entering the
  // chunk (step 2's `chunks`).
  for (int s = tid; s < L; s += NT) {
    const bool in = s < lc;
    dv[s] = in ? ws[(row0 + s) * (2 * H) + h] : 0.f;
    cs[s] = in ? ws[(row0 + s) * (2 * H) + H + h] : 0.f;
  }
  for (int e = tid; e < L * N; e += NT) {
    const int t = e / N, n = e % N;
    const bool in = t < lc;
    cmat[t * CR + n * CC] = in ? to_f(cm[(row0 + t) * {{ c_stride }} + g * N + n]) : 0.f;
    bmat[t * CR + n * CC] = in ? to_f(bm[(row0 + t) * {{ b_stride }} + g * N + n]) : 0.f;
  }
  for (int e = tid; e < L * P; e += NT) {
    const int t = e / P, p = e % P;
    xmat[XR == P ? e : t * XR + p] = t < lc ? to_f(x[(row0 + t) * {{ x_stride }} + h * P + p]) : 0.f;
  }
  const int nch = gridDim.y;
  const float* src = chunks + (((long)b * nch + c) * H + h) * (P * N);
  for (int e = tid; e < N * P; e += NT) smat[SR == P ? e : (e / P) * SR + e % P] = src[e];
  __syncthreads();
