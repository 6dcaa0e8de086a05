// {{ name }}: zamba2c kernel, the one-row decode step as one persistent kernel
// (docs/KERNELS.md "Persistent decode step"). Generated from templates/persistent_decode.cu
// around the bodies of the `decode` table's kernels: each member's body is its own kernel's
// (the same template and context, {{ block }} threads), in a namespace of its own so their
// typedefs do not meet. The blocks stay resident for the whole step (a cooperative launch
// sized to the GPU): for each launch of the table, in order, they walk its grid's tiles (block
// index (x, y, z) as the member's body sees it: `blockIdx` is renamed to a shared variable
// inside the bodies), then meet at a grid-wide barrier, which orders the launch's writes
// before the next launch's reads as the stream order did. The runtime passes every launch's
// arguments in one table (`args`, 8 bytes each: device addresses, or the i32 scalars) and the
// launches in `ops` as (member, grid x, y, z, first argument, the argument of the weight its
// tiles stream in order or ~0, that weight's bytes a tile).
{% include "z2c_common.cuh" %}
struct z2c_vblock_t { unsigned x, y, z; };
// The block index of the tile being run (written by thread 0 between barriers).
__shared__ z2c_vblock_t z2c_vb;
{% if dynamic %}// The tile thread 0 took from the launch's counter, for the whole block.
__shared__ unsigned z2c_next;
{% endif %}
{% for m in members %}
namespace {{ m.ns }} {
#define blockIdx z2c_vb
{{ m.source }}
#undef blockIdx
{% if dynamic %}// The tiles of one launch of {{ m.name }} (grid gx × gy × gz) this block takes from the
// launch's counter `ctr`, one at a time, until none is left.
__device__ __noinline__ void tiles(const unsigned long long* a, unsigned gx, unsigned gy, unsigned gz, unsigned* ctr) {
  const unsigned n = gx * gy * gz;
  for (;;) {
    if (threadIdx.x == 0) z2c_next = atomicAdd(ctr, 1u);
    __syncthreads();
    const unsigned t = z2c_next;
    if (t >= n) break;  // the same t in every thread
{% else %}// The tiles of one launch of {{ m.name }} (grid gx × gy × gz) that fall to this block.
__device__ __noinline__ void tiles(const unsigned long long* a, unsigned gx, unsigned gy, unsigned gz) {
  const unsigned n = gx * gy * gz;
  for (unsigned t = blockIdx.x; t < n; t += gridDim.x) {
{% endif %}    if (threadIdx.x == 0) z2c_vb = {t % gx, (t / gx) % gy, t / (gx * gy)};
    __syncthreads();
    {{ m.name }}_body(t % gx{% for a in m.args %}, {{ a }}{% endfor %});
    __syncthreads();  // the body's shared memory and z2c_vb are reused by the next tile
  }
}
}  // namespace {{ m.ns }}
{% endfor %}
// The GPU's nanosecond clock (for the trace).
__device__ __forceinline__ unsigned long long z2c_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Grid-wide barrier: every block's writes before it are visible to every block after it
// (bar[0] counts arrivals, bar[1] is the generation; both persist across steps). With a trace
// (`tr`, the runtime's ZAMBA2C_PERSISTENT_TRACE): the first and the last block's arrival and
// block 0's exit, in ns, so a launch's work, its spread over the blocks and the barrier's own
// cost can be told apart.
// `done`, when not null, is the counter of the launch just finished: every block has taken its
// last tile from it, so the last to arrive sets it back to zero for the next step.
__device__ __forceinline__ void z2c_grid_sync(unsigned* bar, unsigned long long* tr, unsigned* done) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* gen = bar + 1;
    const unsigned g = *gen;
    __threadfence();
    const unsigned arrived = atomicAdd(bar, 1u);
    if (tr != nullptr && arrived == 0) tr[0] = z2c_now();
    if (arrived == gridDim.x - 1) {
      if (tr != nullptr) tr[1] = z2c_now();
      if (done != nullptr) *done = 0;
      bar[0] = 0;
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      while (*gen == g) __nanosleep(20);
    }
    __threadfence();
    if (tr != nullptr && blockIdx.x == 0) tr[2] = z2c_now();
  }
  __syncthreads();
}

// At least {{ min_blocks }} block(s) an SM: the members' own kernels run at 40-48 registers (118 for
// attention), but one kernel holds registers for its widest member; ptxas caps them to fit.
extern "C" __global__ void __launch_bounds__({{ block }}, {{ min_blocks }}) {{ name }}(const unsigned long long* __restrict__ args, const unsigned* __restrict__ ops, int nops, unsigned* bar) {
  constexpr int OPW = 7;
  // bar[2] != 0: trace the step into bar[4..] (u64: the start, then three times a launch).
  unsigned long long* tr = bar[2] != 0 ? reinterpret_cast<unsigned long long*>(bar + 4) : nullptr;
  if (tr != nullptr && blockIdx.x == 0 && threadIdx.x == 0) tr[0] = z2c_now();
  // Each launch's tile counter (after the trace), zero at the start of every step.
  unsigned* ctrs = bar + 4 + 2 * (1 + 3 * nops);
  for (int i = 0; i < nops; ++i) {
    const unsigned* o = ops + OPW * i;
    switch (o[0]) {
{% for m in members %}      case {{ loop.index0 }}: {{ m.ns }}::tiles(args + o[4], o[1], o[2], o[3]{% if dynamic %}, ctrs + i{% endif %}); break;
{% endfor %}      default: break;
    }
{% if prefetch > 0 %}    if (i + 1 < nops) {
      // Done with this launch: ask L2 for the start of this block's first tile of the next
      // one while the others finish ({{ prefetch }} bytes at most), so HBM keeps streaming through the barrier.
      const unsigned* nx = o + OPW;
      if (nx[5] != 0xffffffffu && blockIdx.x < nx[1] * nx[2] * nx[3]) {
        const char* w = reinterpret_cast<const char*>(args[nx[4] + nx[5]]) + (unsigned long long)blockIdx.x * nx[6];
        const unsigned bytes = min(nx[6], {{ prefetch }}u);
        for (unsigned off = threadIdx.x * 128u; off < bytes; off += blockDim.x * 128u) prefetch_l2(w + off);
      }
    }
{% endif %}    // A barrier after every launch but the last; after the last too when it is traced{% if dynamic %}
    // (and always here: its counter is set back there){% endif %}.
    if (i + 1 < nops || {% if dynamic %}true{% else %}tr != nullptr{% endif %})
      z2c_grid_sync(bar, tr != nullptr ? tr + 1 + 3 * i : nullptr, {% if dynamic %}ctrs + i{% else %}nullptr{% endif %});
  }
}
