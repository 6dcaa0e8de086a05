
extern "C" __global__ void __launch_bounds__({{ block }}) {{ name }}({% for p in params %}{{ p.decl }}{% if not loop.last %}, {% endif %}{% endfor %}) {
  {{ name }}_body(blockIdx.x{% for p in params %}, {{ p.name }}{% endfor %});
}
