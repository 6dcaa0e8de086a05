  // Accumulator fragment (mma.m16n8k16): lane holds rows g and g + 8, columns 2t and 2t + 1 of
  // each 16×8 tile; warp tile MI×16 rows by 4×8 columns at (wm, wn). Shared by the tensor-core
  // GEMMs; the epilogue (templates/linear_epilogue.cu) sees `v`, `row`, `n` and `o`.
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const long m = m0 + wm + i * 16 + g + h * 8;
      if (m >= rows) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = n0 + wn + j * 8 + 2 * t + e;
          if (n < {{ n }}) {
            const long row = m, o = row * {{ out_stride }} + n;
            float v = acc[i][j][2 * h + e];
{% include "linear_epilogue.cu" %}            out[o] = from_f<act_t>(v);
          }
        }
    }
