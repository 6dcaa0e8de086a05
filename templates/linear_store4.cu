      {
        // Features `first` .. `first` + 3 of output row `row` from `sum` (a float4), each through
        // the linear's epilogue (templates/linear_epilogue.cu); features past N are not stored.
        const float sums[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int n = first + q;
          if (n < {{ n }}) {
            const long o = row * {{ out_stride }} + n;
            float v = sums[q];
{% include "linear_epilogue.cu" %}            out[o] = from_f<act_t>(v);
          }
        }
      }
