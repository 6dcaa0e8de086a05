//! The one-row decode step as one persistent kernel (docs/KERNELS.md "Persistent decode step";
//! templates/persistent_decode.cu): the `decode` table's kernels become members of one kernel
//! whose resident blocks run every launch's tiles in order, a grid-wide barrier between launches.

use std::collections::{BTreeMap, BTreeSet};

use zamba2c_ir::kernel::{CType, GraphProgram, Kernel, PersistentDecode};

use crate::render::{PersistentMember, Renderer};
use crate::CodegenError;

/// The persistent kernel's name and its blocks' threads.
pub const PERSISTENT_KERNEL: &str = "z2c_persistent_decode";
const PERSISTENT_BLOCK: u32 = 256;

/// The families whose bodies run unchanged as members: they index their block only through
/// `blockIdx` (renamed in the persistent kernel) with the tile as `blockIdx.x`, use no dynamic
/// shared memory and no cluster, and work with 256 threads (`attention_decode` with 8 warps).
const MEMBER_FAMILIES: [&str; 4] = ["proj_gemv", "mamba_step", "attention_decode", "embedding"];

/// The persistent kernel of `decode` (the one-row table) from its kernels' template contexts
/// (`contexts`: name -> (family, context)), or why the table cannot have one.
pub fn persistent_decode(
    decode: &GraphProgram,
    kernels: &BTreeMap<String, Kernel>,
    contexts: &BTreeMap<String, (String, String)>,
    renderer: &Renderer,
) -> Result<Result<(Kernel, PersistentDecode), String>, CodegenError> {
    let mut names = BTreeSet::new();
    for l in &decode.launches {
        let Some(k) = kernels.get(&l.kernel) else {
            return Ok(Err(format!("kernel {} is not in the program", l.kernel)));
        };
        let block_ok =
            l.block == PERSISTENT_BLOCK || (k.family == "attention_decode" && l.block == 128);
        if l.library.is_some()
            || l.smem != 0
            || !block_ok
            || !MEMBER_FAMILIES.contains(&k.family.as_str())
        {
            return Ok(Err(format!(
                "launch of {} (node %{}): family {}, {} threads, {} bytes of shared memory{}",
                l.kernel,
                l.node,
                k.family,
                l.block,
                l.smem,
                if l.library.is_some() {
                    ", library GEMM"
                } else {
                    ""
                }
            )));
        }
        names.insert(l.kernel.clone());
    }
    // Warps a `proj_gemv` member splits each row group's input over
    // (`ZAMBA2C_TUNE_PERSISTENT_KS`, a measurement; 1: as its own kernel): more warps a row group
    // means fewer rows a tile, so more, shorter tiles for the blocks to share.
    let ks_target = crate::tune("PERSISTENT_KS", 1).max(1);
    let mut members = Vec::new();
    let mut prefetch_param = Vec::new();
    let mut tile_scale = Vec::new();
    for name in &names {
        // A projection with one weight matrix: its tiles are consecutive row blocks of it.
        let params = &kernels[name].params;
        let weights: Vec<usize> = (0..params.len())
            .filter(|&i| {
                let n = &params[i].name;
                n.len() > 1 && n.starts_with('w') && n[1..].bytes().all(|b| b.is_ascii_digit())
            })
            .collect();
        prefetch_param.push(match (kernels[name].family.as_str(), weights.as_slice()) {
            ("proj_gemv", [w]) => Some(*w as u32),
            _ => None,
        });
        let (family, context) = contexts.get(name).ok_or_else(|| CodegenError::Template {
            template: "templates/persistent_decode.cu".into(),
            msg: format!("no template context for {name}"),
        })?;
        let mut ctx: serde_json::Map<String, serde_json::Value> = serde_json::from_str(context)
            .map_err(|e| CodegenError::Template {
                template: format!("templates/{family}.cu"),
                msg: e.to_string(),
            })?;
        ctx.insert("block".into(), PERSISTENT_BLOCK.into());
        tile_scale.push(if family == "proj_gemv" {
            split_rows(&mut ctx, ks_target as u64)
        } else {
            1
        });
        if family == "attention_decode" {
            // Its warps are a template constant: 8 warps fill the 256 threads.
            ctx.insert("nw".into(), (PERSISTENT_BLOCK / 32).into());
        }
        let args = kernels[name]
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| match p.ty {
                CType::I32 => format!("(i32)a[{i}]"),
                CType::ConstPtr(d) => format!("(const {}*)a[{i}]", CType::elem(d)),
                CType::Ptr(d) => format!("({}*)a[{i}]", CType::elem(d)),
            })
            .collect();
        members.push(PersistentMember {
            name: name.clone(),
            family: family.clone(),
            context: ctx,
            args,
        });
    }
    // Blocks an SM (`ZAMBA2C_TUNE_PERSISTENT_MIN_BLOCKS`): 3 caps the registers at 80, which
    // ptxas meets on the 2.7B shape with a few bytes spilled (175 unbounded; 2: 128, 4: 64), and
    // lets all 320 `mamba_step` tiles of a layer run in one round (396 blocks resident).
    let min_blocks = crate::tune("PERSISTENT_MIN_BLOCKS", 3).clamp(1, 8) as u32;
    // Bytes of the next launch's weights a block asks L2 for before each barrier
    // (`ZAMBA2C_TUNE_PERSISTENT_PREFETCH`, 0: none; a measurement).
    let prefetch = crate::tune("PERSISTENT_PREFETCH", 0) as u32;
    // Blocks take a launch's tiles from a counter instead of round robin
    // (`ZAMBA2C_TUNE_PERSISTENT_DYNAMIC=1`, a measurement): a block whose tiles came back early
    // takes more, so a launch ends about one tile after its last block starts its last tile.
    let dynamic = crate::tune("PERSISTENT_DYNAMIC", 0) != 0;
    let source = renderer.render_persistent(
        PERSISTENT_KERNEL,
        (PERSISTENT_BLOCK, min_blocks, prefetch, dynamic),
        &members,
    )?;
    Ok(Ok((
        Kernel {
            name: PERSISTENT_KERNEL.into(),
            family: "persistent_decode".into(),
            params: Vec::new(),
            source,
        },
        PersistentDecode {
            kernel: PERSISTENT_KERNEL.into(),
            members: names.into_iter().collect(),
            block: PERSISTENT_BLOCK,
            prefetch_param,
            tile_scale,
        },
    )))
}

/// Raises a `proj_gemv` context's `ks` (warps splitting a row group's input) towards `target`
/// while every warp keeps at least 64 16-byte chunks of input (stricter than the split
/// codegen/src/fused/gemv.rs makes for its own kernels, which may leave a warp 32) and the
/// block's warps divide evenly; returns how many times more
/// tiles the member then has than its kernel (1 when nothing changed).
fn split_rows(ctx: &mut serde_json::Map<String, serde_json::Value>, target: u64) -> u32 {
    let get = |k: &str| ctx.get(k).and_then(serde_json::Value::as_u64);
    let (Some(ks), Some(warps), Some(vec)) = (get("ks"), get("warps"), get("vec")) else {
        return 1;
    };
    let chunks: u64 = ctx
        .get("segs")
        .and_then(serde_json::Value::as_array)
        .map(|segs| {
            segs.iter()
                .filter(|s| s["read_w"].as_bool() == Some(true))
                .filter_map(|s| s["len"].as_u64())
                .map(|len| len / vec.max(1))
                .sum()
        })
        .unwrap_or(0);
    let mut new = ks.max(1);
    while new * 2 <= target && new * 2 <= warps && warps % (new * 2) == 0 && chunks >= 64 * new * 2
    {
        new *= 2;
    }
    ctx.insert("ks".into(), new.into());
    (new / ks.max(1)).clamp(1, u64::from(zamba2c_ir::kernel::MAX_TILE_SCALE)) as u32
}

#[cfg(test)]
mod tests {
    use super::split_rows;
    use serde_json::json;

    fn ctx(ks: u64, len: u64) -> serde_json::Map<String, serde_json::Value> {
        let v = json!({"ks": ks, "warps": 8, "vec": 8, "segs": [
            {"read_w": true, "len": len}, {"read_w": false, "len": 99999}]});
        v.as_object().unwrap().clone()
    }

    #[test]
    fn smaller_tiles_keep_64_chunks_a_warp() {
        // 2560 inputs: 320 chunks, enough for 4 warps a row group, not 8.
        let mut c = ctx(1, 2560);
        assert_eq!(split_rows(&mut c, 8), 4);
        assert_eq!(c["ks"], 4);
        // 1024 inputs: 128 chunks, 2 warps at most; from a kernel already at 2, no change.
        let mut c = ctx(1, 1024);
        assert_eq!(split_rows(&mut c, 4), 2);
        let mut c = ctx(2, 1024);
        assert_eq!(split_rows(&mut c, 4), 1);
        assert_eq!(c["ks"], 2);
        // Target 1: the kernel's own tiles.
        let mut c = ctx(1, 2560);
        assert_eq!(split_rows(&mut c, 1), 1);
        assert_eq!(c["ks"], 1);
    }
}
