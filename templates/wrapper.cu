
extern "C" __global__ void __launch_bounds__({{ block }}{% if min_blocks is defined %}, {{ min_blocks }}{% endif %}){% if cluster is defined %} Z2C_CLUSTER({{ cluster }}){% endif %} {{ name }}({% for p in params %}{{ p.decl }}{% if not loop.last %}, {% endif %}{% endfor %}) {
{% if pdl_inside is defined and pdl_inside %}  // The body waits for the previous launch itself, after what it may do before (z2c_grid_wait).
{% else %}  // Everything this kernel does depends on earlier launches: wait for them, then let the next
  // launch's blocks in (templates/z2c_common.cuh, programmatic dependent launch).
  z2c_grid_wait();
  z2c_launch_dependents();
{% endif %}  {{ name }}_body(blockIdx.x{% for p in params %}, {{ p.name }}{% endfor %});
}
