//! Every run says what executed its multiply-accumulates (issue 23; docs/int8.md,
//! "What ran"), and a report warns when an int8 model silently runs part of
//! them in float between a dequantise and a quantise.
//!
//! tiny-cnn at 32 px (models/tiny/CARD.md), MACs per image:
//! conv1 3→16, 3×3, 32×32 out: 16·32·32 · 3·3·3 = 442 368;
//! conv2 16→32, 3×3 stride 2, 16×16 out: 32·16·16 · 16·3·3 = 1 179 648;
//! fc 32→10: 320. Convolutions 1 622 016, all 1 622 336.

use std::path::{Path, PathBuf};
use std::process::Command;

use quba_edge::engine::Engine;
use quba_edge::grad::{read_model, write_model};
use quba_edge::protocol::{decode_all, Backend, Execution, Message};
use tract_onnx::pb::NodeProto;

use crate::util::*;

const CONVS: u64 = 442_368 + 1_179_648;
const FC: u64 = 320;

fn tiny(name: &str) -> PathBuf {
    root().join(format!("models/tiny/tiny-cnn.{name}.onnx"))
}

/// tiny-cnn's input side; the zoo's is 64.
const TINY: usize = 32;

fn ran(model: &Path, side: usize, backend: Backend) -> Execution {
    // Batch 2: the counts are per image, whatever the batch.
    Engine::load_on(model, 2, side, backend).unwrap_or_else(|e| panic!("{}: {e:#}", model.display())).execution
}

fn macs(quba_int8: u64, tract_int8: u64, float_fallback: u64, float: u64) -> [u64; 4] {
    [quba_int8, tract_int8, float_fallback, float]
}

fn of(e: &Execution) -> [u64; 4] {
    [e.quba_int8, e.tract_int8, e.float_fallback, e.float]
}

#[test]
fn each_tiny_model_counts_its_macs_by_what_ran_them() {
    assert_eq!(of(&ran(&tiny("fp32"), TINY, Backend::TractCpu)), macs(0, 0, 0, CONVS + FC));
    // QDQ: the convolutions are fused onto the integer kernels; the Gemm head
    // reads a dequantised activation and dequantised weights, and runs in float.
    let qdq = ran(&tiny("int8"), TINY, Backend::TractCpu);
    assert_eq!(of(&qdq), macs(CONVS, 0, FC, 0));
    assert_eq!(qdq.fallback_nodes, ["fc"]);
    // QOperator: QLinearConv on the kernels; the head's weights were left
    // float by the exporter, no dequantisation feeds it: float by design.
    assert_eq!(of(&ran(&tiny("int8-qop"), TINY, Backend::TractCpu)), macs(CONVS, 0, 0, FC));
    // tract alone: its own QLinearConv, and QDQ convolutions as float between
    // quantise and dequantise, which is what tract does with them.
    assert_eq!(of(&ran(&tiny("int8-qop"), TINY, Backend::TractPlain)), macs(0, CONVS, 0, FC));
    let plain = ran(&tiny("int8"), TINY, Backend::TractPlain);
    assert_eq!(of(&plain), macs(0, 0, CONVS + FC, 0));
    assert_eq!(plain.fallback_nodes.len(), 3, "{plain:?}");
}

/// tiny-cnn's QDQ file with the second convolution's float output also read
/// by another node, as a residual branch taken before quantisation would:
/// the fuser must leave that pattern alone (its QuantizeLinear is not the
/// only reader), so the convolution runs in float.
fn unfusable(dir: &Path) -> (PathBuf, String) {
    let mut m = read_model(&tiny("int8")).unwrap();
    let g = m.graph.as_mut().unwrap();
    let convs: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type == "Conv").collect();
    assert_eq!(convs.len(), 2, "tiny-cnn has two convolutions");
    let (name, y) = (convs[1].name.clone(), convs[1].output[0].clone());
    g.node.push(NodeProto { op_type: "Identity".into(), name: "second_reader".into(), input: vec![y], output: vec!["unread".into()], ..Default::default() });
    let path = dir.join("unfusable.onnx");
    write_model(&m, &path).unwrap();
    std::fs::copy(root().join("models/tiny/tiny-cnn.int8.json"), dir.join("unfusable.json")).unwrap();
    (path, name)
}

#[test]
fn an_unfusable_convolution_is_a_named_fallback_in_the_header_and_the_report() {
    let dir = tmp_dir("what_ran", "unfusable");
    let (model, conv2) = unfusable(&dir);
    let e = ran(&model, TINY, Backend::TractCpu);
    assert_eq!(of(&e), macs(442_368, 0, 1_179_648 + FC, 0));
    assert_eq!(e.fallback_nodes, [conv2.clone(), "fc".into()], "largest first");

    let log = dir.join("run.qlog");
    let st = Command::new(DEVICE)
        .args(["run", "--model"])
        .arg(&model)
        .args(["--data", "tests/data/tiny/val", "--per-class", "1", "--probes", "clean", "--out"])
        .arg(&log)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (frames, _) = decode_all(&std::fs::read(&log).unwrap());
    let header = frames.into_iter().find_map(|f| match f.message {
        Message::Header(h) => Some(h),
        _ => None,
    });
    assert_eq!(header.expect("a header").execution, e, "the header carries what the engine counted");

    let runs = dir.join("runs");
    let out = Command::new(QUBA)
        .args(["eval", "--model"])
        .arg(&model)
        .args(["--data", "tests/data/tiny/val", "--per-class", "1", "--probes", "clean", "--progress", "quiet", "--runs-dir"])
        .arg(&runs)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(runs.join("results.json")).unwrap()).unwrap();
    let execution = &results["models"][0]["protocol"]["execution"];
    assert_eq!(execution["macs_per_image"]["float_fallback"], 1_179_648 + FC, "{execution}");
    let share = execution["shares"]["float_fallback"].as_f64().unwrap();
    assert!((share - (1_179_648 + FC) as f64 / (CONVS + FC) as f64).abs() < 1e-12, "{execution}");
    let warning = results["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).find(|w| w.contains("run in float"));
    // 1 179 968 of 1 622 336 MACs.
    let warning = warning.unwrap_or_else(|| panic!("no fallback warning: {}", results["warnings"]));
    assert!(warning.contains("72.73%") && warning.contains(&conv2), "{warning}");
    let html = std::fs::read_to_string(runs.join("report.html")).unwrap();
    assert!(html.contains("MACs: 27% quba int8 · 73% float fallback<"), "the protocol table's line");
}

#[test]
fn zoo_int8_models_count_what_their_fp32_sources_count_and_name_what_fell_back() {
    let zoo = |name: &str| ran(&root().join(format!("models/zoo/{name}.onnx")), 64, Backend::TractCpu);
    let total = |e: &Execution| of(e).iter().sum::<u64>();
    for model in ["cnn-baseline", "vit-tiny"] {
        let (fp32, int8) = (zoo(&format!("{model}.fp32")), zoo(&format!("{model}.int8")));
        assert_eq!(of(&fp32), macs(0, 0, 0, total(&fp32)), "{model}");
        assert_eq!(total(&int8), total(&fp32), "{model}: quantisation does not change the arithmetic's size");
    }
    // The CNN: every convolution on the kernels, the classifier Gemm between Q/DQ.
    let cnn = zoo("cnn-baseline.int8");
    assert_eq!(cnn.fallback_nodes, ["node_linear"], "{cnn:?}");
    assert!(cnn.quba_int8 > 0 && cnn.float == 0, "{cnn:?}");
    // ViT: the patch embedding on the kernels; the linear layers (MatMul with
    // dequantised weights and inputs) fall back; the attention products, whose
    // inputs the exporter left float, are float.
    let vit = zoo("vit-tiny.int8");
    assert!(vit.quba_int8 > 0 && vit.float > 0 && vit.float_fallback > vit.quba_int8 + vit.float, "{vit:?}");
    assert_eq!(vit.fallback_nodes.len(), Execution::NAMED, "{vit:?}");
    assert!(vit.fallback_nodes.iter().all(|n| n.starts_with("node_MatMul")), "{vit:?}");
}
