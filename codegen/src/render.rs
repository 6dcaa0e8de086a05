//! Rendering: the tera templates of `templates/`, embedded at build time so a compiled zamba2c
//! generates kernels anywhere. One template per family, the shared device header inlined.

use tera::{Context, Tera};

use crate::families::KernelSpec;
use crate::CodegenError;

/// Every template, by name (`<family>.cu`, plus the prelude and the shared header).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "z2c_common.cuh",
        include_str!("../../templates/z2c_common.cuh"),
    ),
    ("prelude.cu", include_str!("../../templates/prelude.cu")),
    ("embedding.cu", include_str!("../../templates/embedding.cu")),
    ("norm_body.cu", include_str!("../../templates/norm_body.cu")),
    ("rms_norm.cu", include_str!("../../templates/rms_norm.cu")),
    (
        "elementwise.cu",
        include_str!("../../templates/elementwise.cu"),
    ),
    ("concat.cu", include_str!("../../templates/concat.cu")),
    (
        "linear_gemv.cu",
        include_str!("../../templates/linear_gemv.cu"),
    ),
    (
        "linear_gemm.cu",
        include_str!("../../templates/linear_gemm.cu"),
    ),
    (
        "linear_mma.cu",
        include_str!("../../templates/linear_mma.cu"),
    ),
    (
        "split_bf16.cu",
        include_str!("../../templates/split_bf16.cu"),
    ),
    ("gelu_mul.cu", include_str!("../../templates/gelu_mul.cu")),
    ("round_f16.cu", include_str!("../../templates/round_f16.cu")),
    ("pair_sum.cu", include_str!("../../templates/pair_sum.cu")),
    (
        "argmax_rows.cu",
        include_str!("../../templates/argmax_rows.cu"),
    ),
    ("mma_store.cu", include_str!("../../templates/mma_store.cu")),
    (
        "mma_reduce_cluster.cu",
        include_str!("../../templates/mma_reduce_cluster.cu"),
    ),
    (
        "linear_mma_pipe.cu",
        include_str!("../../templates/linear_mma_pipe.cu"),
    ),
    (
        "ssd_chunk_out_load.cu",
        include_str!("../../templates/ssd_chunk_out_load.cu"),
    ),
    (
        "linear_rows.cu",
        include_str!("../../templates/linear_rows.cu"),
    ),
    (
        "linear_store4.cu",
        include_str!("../../templates/linear_store4.cu"),
    ),
    (
        "causal_conv1d.cu",
        include_str!("../../templates/causal_conv1d.cu"),
    ),
    ("ssm_scan.cu", include_str!("../../templates/ssm_scan.cu")),
    (
        "ssd_chunk_state.cu",
        include_str!("../../templates/ssd_chunk_state.cu"),
    ),
    (
        "ssd_state_pass.cu",
        include_str!("../../templates/ssd_state_pass.cu"),
    ),
    (
        "ssd_chunk_out.cu",
        include_str!("../../templates/ssd_chunk_out.cu"),
    ),
    (
        "ssd_chunk_weights.cu",
        include_str!("../../templates/ssd_chunk_weights.cu"),
    ),
    (
        "ssd_chunk_state_mma.cu",
        include_str!("../../templates/ssd_chunk_state_mma.cu"),
    ),
    (
        "ssd_chunk_out_mma.cu",
        include_str!("../../templates/ssd_chunk_out_mma.cu"),
    ),
    (
        "gated_rms_norm.cu",
        include_str!("../../templates/gated_rms_norm.cu"),
    ),
    (
        "group_rms_norm.cu",
        include_str!("../../templates/group_rms_norm.cu"),
    ),
    ("kv_append.cu", include_str!("../../templates/kv_append.cu")),
    (
        "attention_flash_scores.cu",
        include_str!("../../templates/attention_flash_scores.cu"),
    ),
    (
        "attention_flash_p.cu",
        include_str!("../../templates/attention_flash_p.cu"),
    ),
    ("attention.cu", include_str!("../../templates/attention.cu")),
    (
        "attention_flash.cu",
        include_str!("../../templates/attention_flash.cu"),
    ),
    (
        "attention_decode.cu",
        include_str!("../../templates/attention_decode.cu"),
    ),
    ("proj_gemv.cu", include_str!("../../templates/proj_gemv.cu")),
    (
        "mamba_step.cu",
        include_str!("../../templates/mamba_step.cu"),
    ),
    (
        "mamba_step_pipe.cu",
        include_str!("../../templates/mamba_step_pipe.cu"),
    ),
    (
        "mamba_conv_load.cu",
        include_str!("../../templates/mamba_conv_load.cu"),
    ),
    (
        "mamba_conv_apply.cu",
        include_str!("../../templates/mamba_conv_apply.cu"),
    ),
    ("wrapper.cu", include_str!("../../templates/wrapper.cu")),
    (
        "conv_state_update.cu",
        include_str!("../../templates/conv_state_update.cu"),
    ),
    (
        "linear_epilogue.cu",
        include_str!("../../templates/linear_epilogue.cu"),
    ),
];

/// The loaded templates.
pub struct Renderer {
    tera: Tera,
    /// How z2c_common.cuh's smem_addr converts a generic pointer: by the compiler's builtin
    /// (the default) or inline PTX (`ZAMBA2C_TUNE_SMEM_CVTA=0`; docs/KERNELS.md "Tuning
    /// knobs"). Read once, for every kernel this renderer renders.
    smem_cvta: bool,
}

impl Renderer {
    /// Parses every template.
    pub fn new() -> Result<Self, CodegenError> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| CodegenError::Template {
                template: "(all)".into(),
                msg: error_chain(&e),
            })?;
        Ok(Renderer {
            tera,
            smem_cvta: crate::tune_mode("SMEM_CVTA", 1) == 1,
        })
    }

    /// Renders `spec` as kernel `name`.
    pub fn render(&self, spec: &KernelSpec, name: &str) -> Result<String, CodegenError> {
        self.render_context(spec.family, &spec.context, name)
    }

    /// Renders template `family` with the serialized context `context` as kernel `name`.
    pub fn render_context(
        &self,
        family: &str,
        context: &str,
        name: &str,
    ) -> Result<String, CodegenError> {
        let value: serde_json::Value = serde_json::from_str(context)
            .map_err(|e| template_err(&format!("{family}.cu"), e.to_string()))?;
        let mut ctx = kernel_context(family, value, name)?;
        ctx.insert("smem_cvta", &self.smem_cvta);
        let body = self.render_file(&format!("{family}.cu"), &ctx)?;
        // The wrapper's errors name the kernel's template, as they always have.
        let wrapper = self
            .tera
            .render("wrapper.cu", &ctx)
            .map_err(|e| template_err(&format!("{family}.cu"), error_chain(&e)))?;
        Ok(body + &wrapper)
    }

    /// Renders template file `file` with `ctx`.
    fn render_file(&self, file: &str, ctx: &Context) -> Result<String, CodegenError> {
        self.tera
            .render(file, ctx)
            .map_err(|e| template_err(file, error_chain(&e)))
    }
}

/// The tera context of kernel `name` of template `family` from its JSON context.
fn kernel_context(
    family: &str,
    value: serde_json::Value,
    name: &str,
) -> Result<Context, CodegenError> {
    let mut ctx = Context::from_value(value)
        .map_err(|e| template_err(&format!("{family}.cu"), error_chain(&e)))?;
    ctx.insert("name", name);
    Ok(ctx)
}

/// A template error naming `templates/<file>`.
fn template_err(file: &str, msg: String) -> CodegenError {
    CodegenError::Template {
        template: format!("templates/{file}"),
        msg,
    }
}

/// A tera error with its causes (tera puts the useful part in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
