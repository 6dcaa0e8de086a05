{% if epi == "residual" %}            v = to_f(res[row * {{ res_stride }} + n]) + rnd<act_t>(v);  // the residual add (ZAMBA2.md §2.2)
{% elif epi == "accumulate" %}            v = rnd<act_t>(to_f(out[o])) + rnd<act_t>(v);  // base projection + adapter (§2.4)
{% endif %}