// {{ name }}: zamba2c kernel, family {{ family }}. Generated from templates/{{ family }}.cu; shapes
// are baked in, the parameter list comes from codegen's kernel spec (one list for signature and
// launch). The body is a __device__ function of the block's tile index, so fused and persistent
// kernels can call it; the __global__ wrapper at the end (templates/wrapper.cu) only forwards.
{% include "z2c_common.cuh" %}
// Row b of a call (the b-th sequence of the batch) continues the sequence held in state slot
// META_SLOT(b), after META_POS(b) tokens already cached: `meta` is [pos, slot] per row
// (ir/src/kernel.rs `Arg::Meta`, docs/KERNELS.md "meta"). Activations are addressed by b,
// states and KV caches by the slot.
#define META_POS(b) (meta[2 * (b)])
#define META_SLOT(b) (meta[2 * (b) + 1])
typedef {{ act }} act_t;
{% if w_t is defined %}typedef {{ w_t }} w_t;
{% endif %}{% if out_t is defined %}typedef {{ out_t }} out_t;
{% endif %}{% if x_t is defined %}typedef {{ x_t }} x_t;
{% endif %}{% if ssm_t is defined %}typedef {{ ssm_t }} ssm_t;
{% endif %}{% if cache_t is defined %}typedef {{ cache_t }} cache_t;
{% endif %}{% if rope is defined and rope %}
// RoPE inverse frequencies theta^(-2j/d), computed in f32 by codegen (ZAMBA2.md §2.4).
__device__ const float inv_freq[{{ half }}] = { {{ inv_freq }} };
{% endif %}
static __device__ __forceinline__ void {{ name }}_body(const int tile{% for p in params %}, {{ p.decl }}{% endfor %})
