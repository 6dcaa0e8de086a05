//! The runtime executes the launch table the plan carries (`kernels/program.json` + `*.cu`),
//! not one it regenerates: what it reads back must be exactly what codegen made at compile.

mod common;

use common::*;
use zamba2c_ir::Plan;

#[test]
fn the_plan_carries_the_program_codegen_made() {
    for model in fixture_models() {
        let tmp = tempfile::tempdir().unwrap();
        let plan_dir = tmp.path().join("plan");
        for dtype in ["f32", "bf16"] {
            zamba2c_ok(&[
                "compile",
                model.to_str().unwrap(),
                "-o",
                plan_dir.to_str().unwrap(),
                "--dtype",
                dtype,
            ]);
            let plan = Plan::open(&plan_dir).expect("plan opens");
            let read =
                zamba2c_runtime::cuda::engine::read_program(&plan).expect("program reads back");
            let mut made = zamba2c_codegen::build_program(&plan.module).expect("codegen");
            made.prompt.nodes = plan.module.prompt.topo_order();
            made.decode.nodes = plan.module.decode.topo_order();
            assert_eq!(read, made, "{}: {dtype}", model.display());
        }
    }
}

#[test]
fn an_edited_kernel_source_is_refused_by_the_checksums() {
    let model = &fixture_models()[0];
    let tmp = tempfile::tempdir().unwrap();
    let plan_dir = tmp.path().join("plan");
    zamba2c_ok(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan_dir.to_str().unwrap(),
    ]);
    let cu = std::fs::read_dir(plan_dir.join("kernels"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "cu"))
        .expect("a kernel source");
    let mut src = std::fs::read_to_string(&cu).unwrap();
    src.push_str("\n// edited\n");
    std::fs::write(&cu, src).unwrap();
    let err = Plan::open(&plan_dir).err().expect("refused").to_string();
    assert!(
        err.contains(&cu.file_name().unwrap().to_string_lossy().to_string())
            && err.contains("edited after compile"),
        "{err}"
    );
}

/// Same input, same plan bytes: every file of two compiles of the same checkpoint is identical
/// (no hash-map order, timestamp or path leaks into the plan), and so are the IR dumps.
#[test]
fn compiling_twice_gives_identical_plans_and_dumps() {
    let model = fixture_models().pop().expect("a fixture");
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for i in 0..2 {
        let plan = tmp.path().join(format!("plan{i}"));
        let dump = tmp.path().join(format!("dump{i}"));
        zamba2c_ok(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            plan.to_str().unwrap(),
            "--dtype",
            "bf16",
            "--dump-ir",
            dump.to_str().unwrap(),
        ]);
        runs.push((snapshot(&plan), snapshot(&dump)));
    }
    assert!(!runs[0].0.is_empty() && !runs[0].1.is_empty());
    assert!(
        runs[0] == runs[1],
        "two compiles of {} differ",
        model.display()
    );
}

/// `compile --batch-invariant` (docs/KERNELS.md "linear_rows"): module.json carries it, the
/// program reads back, and `inspect` names it and reports every step on `decode_rows` (from 1
/// row; `ROWS_MMA_MIN` for the default plan).
#[test]
fn a_batch_invariant_plan_says_so() {
    let model = fixture_models().pop().expect("a fixture");
    let tmp = tempfile::tempdir().unwrap();
    let default_from = zamba2c_ir::kernel::ROWS_MMA_MIN;
    for (invariant, from) in [(true, 1), (false, default_from)] {
        let plan_dir = tmp.path().join(format!("plan-{invariant}"));
        let p = plan_dir.to_str().unwrap();
        let mut args = vec![
            "compile",
            model.to_str().unwrap(),
            "-o",
            p,
            "--dtype",
            "bf16",
        ];
        if invariant {
            args.push("--batch-invariant");
        }
        zamba2c_ok(&args);
        let plan = Plan::open(&plan_dir).expect("plan opens");
        assert_eq!(plan.module.batch_invariant, invariant);
        zamba2c_runtime::cuda::engine::read_program(&plan).expect("program reads back");
        let out = zamba2c_ok(&["inspect", p]);
        assert_eq!(
            out.lines().next().unwrap_or("").contains("batch-invariant"),
            invariant,
            "{out}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&zamba2c_ok(&["inspect", p, "--format", "json"])).expect("json");
        assert_eq!(
            json["program"]["decode_rows"]["rows_mma_min"], from,
            "{invariant}"
        );
    }
}
