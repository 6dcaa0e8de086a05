// {{ name }}: zamba2c kernel, family {{ family }}. Generated from templates/{{ family }}.cu; shapes
// are baked in, the parameter list comes from codegen's kernel spec (one list for signature and launch).
{% include "z2c_common.cuh" %}
typedef {{ act }} act_t;
{% if rope is defined and rope %}
// RoPE inverse frequencies theta^(-2j/d), computed in f32 by codegen (ZAMBA2.md §2.4).
__device__ const float inv_freq[{{ half }}] = { {{ inv_freq }} };
{% endif %}
extern "C" __global__ void __launch_bounds__({{ block }}) {{ name }}({% for p in params %}{{ p.decl }}{% if not loop.last %}, {% endif %}{% endfor %})
