{# The f16 form of templates/split_bf16.cu: one f16 plane, rounded once (f16-weight plans). #}{% set f16 = true %}{% include "split_bf16.cu" %}
