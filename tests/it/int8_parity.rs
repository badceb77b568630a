//! quba's integer int8 path (src/int8) against its two references, both
//! written by `scripts/int8_parity.py` into `tests/data/int8/` (CI re-runs it
//! with `--check`):
//!
//! - numpy's integer QLinearConv, the ONNX definition computed plainly: the
//!   chain models must give exactly its outputs, in QDQ and QOperator form;
//! - onnxruntime 1.32 (CPU provider): exactly equal on the chain whose
//!   weights stay within ±63; on full-range weights onnxruntime's AVX2
//!   kernel saturates (docs/int8.md), so there the definition rules. On the
//!   zoo's int8 models, top-1 agreement ≥ 99 % (issue 10's bar) with
//!   onnxruntime running the graph as written (DequantizeLinear, f32 Conv,
//!   QuantizeLinear); its fused integer kernels, which saturate, are
//!   reported beside it.

use std::path::{Path, PathBuf};

use quba_edge::engine::Engine;
use quba_edge::metrics::argmax;
use quba_edge::protocol::Backend;
use serde_json::Value;
use crate::util::*;

fn reference() -> Value {
    let path = root().join("tests/data/int8/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Twin of `images` in scripts/int8_parity.py: every step exact in f32, so
/// both languages produce the same bits.
fn images(count: usize, side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * 3 * side * side);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..count {
        for _ in 0..3 {
            let grid: Vec<u64> = (0..64)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    state >> 56
                })
                .collect();
            for y in 0..side {
                for x in 0..side {
                    let v = (grid[(y * 8 / side) * 8 + x * 8 / side] + (x + y) as u64) % 256;
                    out.push((v as f32 / 255.0 - 0.5) / 0.25);
                }
            }
        }
    }
    out
}

fn run(path: &Path, backend: Backend, input: &[f32], count: usize, side: usize) -> (Vec<f32>, usize) {
    let engine = Engine::load_on(path, count, side, backend).unwrap();
    (engine.logits(input, count).unwrap(), engine.integer_convs)
}

#[test]
fn chains_equal_the_integer_definition_in_both_forms() {
    let r = reference();
    let chain = &r["chain"];
    let (count, side) = (chain["images"].as_u64().unwrap() as usize, chain["side"].as_u64().unwrap() as usize);
    let input = images(count, side);
    for tag in ["chain7", "chain8"] {
        let want = floats(&chain[tag]["numpy_integer"]);
        for form in ["qdq", "qop"] {
            let path = root().join(format!("tests/data/int8/{tag}.{form}.onnx"));
            let (got, convs) = run(&path, Backend::TractCpu, &input, count, side);
            assert_eq!(convs, 7, "{}: every convolution should run on the integer kernels", path.display());
            let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 0, "{}: {diff} of {} outputs differ from the integer definition", path.display(), want.len());
        }
        // onnxruntime: equal where its kernel cannot saturate.
        let ort_differs = chain[tag]["onnxruntime_qdq_outputs_differing"].as_u64().unwrap();
        if tag == "chain7" {
            assert_eq!(ort_differs, 0);
            assert_eq!(floats(&chain[tag]["onnxruntime_qdq"]), want);
            assert_eq!(floats(&chain[tag]["onnxruntime_qop"]), want);
        }
        eprintln!("{tag}: quba equals the definition; onnxruntime departs from it in {ort_differs} of {} outputs", want.len());
    }
}

#[test]
fn tract_alone_is_not_the_integer_path() {
    // The `tract` backend keeps tract's own handling; it must not pick up the
    // integer kernels, or comparing the two would compare nothing.
    let r = reference();
    let side = r["chain"]["side"].as_u64().unwrap() as usize;
    let input = images(1, side);
    let (_, convs) = run(&root().join("tests/data/int8/chain8.qdq.onnx"), Backend::TractPlain, &input, 1, side);
    assert_eq!(convs, 0);
}

#[test]
fn zoo_int8_models_agree_with_onnxruntime() {
    let r = reference();
    assert!(r["zoo"].as_object().unwrap().len() >= 8, "the fixture should cover the whole int8 zoo");
    agreement(&r, &root().join("models/zoo"));
}

/// EfficientNet-Lite0 with its real weights, both int8 forms. `.ci/run` builds
/// them (scripts/lite0_from_checkpoint.py) and their reference
/// (`scripts/int8_parity.py --lite0 DIR --lite0-out DIR/int8-reference.json`:
/// onnxruntime on the shared generator's images); `QUBA_LITE0_REFERENCE`
/// names another reference file. Skipped without them unless QUBA_REQUIRE_LITE0=1.
#[test]
fn lite0_agrees_with_onnxruntime() {
    let path = match std::env::var_os("QUBA_LITE0_REFERENCE") {
        Some(p) => PathBuf::from(p),
        None => match crate::lite0_real::lite0_dir() {
            Some(dir) => dir.join("int8-reference.json"),
            None => return,
        },
    };
    assert!(path.exists() || std::env::var("QUBA_REQUIRE_LITE0").is_err(), "QUBA_REQUIRE_LITE0 is set but {} is missing", path.display());
    if !path.exists() {
        eprintln!("skipping: {} missing", path.display());
        return;
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    agreement(&r, Path::new("/"));
}

/// Top-1 agreement of every model in `r["zoo"]` (file names under `dir`, or
/// absolute `path`s) with onnxruntime's graph as written: every decision.
fn agreement(r: &Value, dir: &Path) {
    let count = r["images"].as_u64().unwrap() as usize;
    let zoo = r["zoo"].as_object().unwrap();
    assert!(!zoo.is_empty());
    let (mut agree, mut total) = (0usize, 0usize);
    let (mut plain_agree, mut fused_agree, mut ort_self) = (0usize, 0usize, 0usize);
    for (name, m) in zoo {
        let path: PathBuf = m["path"].as_str().map_or_else(|| dir.join(name), PathBuf::from);
        let side = m["side"].as_u64().unwrap() as usize;
        let k = m["classes"].as_u64().unwrap() as usize;
        let want = floats(&m["logits_unfused"]);
        let fused = floats(&m["logits"]);
        let input = images(count, side);
        let (got, convs) = run(&path, Backend::TractCpu, &input, count, side);
        assert!(convs > 0, "{name}: no convolution took the integer path");
        let (plain, _) = run(&path, Backend::TractPlain, &input, count, side);
        let mut max_diff = 0f32;
        let mut model_agree = 0;
        for i in 0..count {
            let (a, b, p, f) = (&got[i * k..][..k], &want[i * k..][..k], &plain[i * k..][..k], &fused[i * k..][..k]);
            model_agree += (argmax(a) == argmax(b)) as usize;
            plain_agree += (argmax(p) == argmax(b)) as usize;
            fused_agree += (argmax(a) == argmax(f)) as usize;
            ort_self += (argmax(f) == argmax(b)) as usize;
            max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
        }
        eprintln!("{name}: {convs} integer convolutions, top-1 agreement with onnxruntime {model_agree}/{count}, max |Δ logit| {max_diff:.4}");
        agree += model_agree;
        total += count;
    }
    let share = agree as f64 / total as f64;
    eprintln!(
        "zoo: quba's integer path agrees with onnxruntime (graph as written) on {agree}/{total} top-1 decisions ({:.2} %), \
         tract alone on {plain_agree}/{total}; with onnxruntime's fused int8 kernels quba agrees on {fused_agree}/{total} \
         and onnxruntime with itself on {ort_self}/{total}",
        100.0 * share
    );
    // docs/int8.md claims every decision (256/256 on the zoo): the integer
    // path is exact, and only the f32 accumulation of a float conv differs.
    assert_eq!(agree, total, "top-1 agreement with onnxruntime {:.2} %, not every decision", 100.0 * share);
}
