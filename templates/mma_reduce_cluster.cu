  // Split-K partial tiles added across the cluster (templates/linear_mma_pipe.cu with `splits`):
  // each block parks its f32 partial tile in its own shared memory; then block r of the cluster
  // sums columns [r·BN/S, (r+1)·BN/S) of the valid rows over every block's tile in rank order (the
  // same order at every run) and writes them with the linear's epilogue.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  {
    constexpr int S = {{ splits }}, RSTR = BN + 4, CPB = BN / S;  // f32 row stride; columns per block
    static_assert(BN % (4 * S) == 0, "whole float4 column groups per block");
    static_assert(BM * RSTR * 4 <= ST * (XTILE * (int)sizeof(xs_t) + WTILE * 2), "the parked tile fits the stages");
    float* red = reinterpret_cast<float*>(smem_raw);
    __syncthreads();  // every warp is done with the pipeline's stages
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          *reinterpret_cast<float2*>(red + (wm + i * 16 + g + h * 8) * RSTR + wn + j * 8 + 2 * t) =
              make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
    cluster_sync();  // every block's tile is parked and visible to the cluster
    const int rank = tile % S;  // the cluster's blocks are consecutive along x (Z2C_CLUSTER)
    const long valid = rows - m0 < BM ? rows - m0 : BM;
    const unsigned base = smem_addr(red);
    for (int e = tid; e < valid * (CPB / 4); e += NT) {
      const int r = e / (CPB / 4), c = rank * CPB + (e % (CPB / 4)) * 4;
      const unsigned a = base + (unsigned)(r * RSTR + c) * 4u;
      float4 sum = ld_cluster_f4(cluster_map(a, 0));
#pragma unroll
      for (int q = 1; q < S; ++q) {
        add_f4(sum, ld_cluster_f4(cluster_map(a, q)));
      }
      const long row = m0 + r;
      const int first = n0 + c;
{% include "linear_store4.cu" %}    }
    cluster_sync();  // no block leaves while another still reads its tile
  }
#else
{% include "mma_store.cu" %}#endif
