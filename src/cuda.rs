//! `--backend cuda`: tract's CUDA runtime for host reference runs on NVIDIA
//! GPUs (cargo feature `cuda`).
//!
//! tract moves only part of a graph to the GPU (cuDNN convolutions, matmuls,
//! element-wise ops, reductions, softmax) and quietly runs the rest on the
//! CPU with host↔device copies in between. A "GPU reference" that mostly ran
//! on the CPU would be misleading, so preparing a model also profiles one
//! forward pass node by node and the run header carries the result
//! (`Placement`): how many nodes ran where and what share of the time each
//! side took.

use std::fmt;

#[cfg(feature = "cuda")]
use anyhow::anyhow;
use anyhow::Result;
#[cfg(not(feature = "cuda"))]
use anyhow::bail;
use tract_onnx::prelude::*;

use crate::engine::Plan;

/// Where a prepared plan's nodes run, and where one profiled pass spent its time.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub gpu_nodes: usize,
    /// Host↔device copies tract inserted between GPU and CPU parts.
    pub transfer_nodes: usize,
    pub cpu_nodes: usize,
    pub gpu_share: f64,
    pub transfer_share: f64,
    pub cpu_share: f64,
    /// Distinct ops left on the CPU, by tract's name for them.
    pub cpu_ops: Vec<String>,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.gpu_nodes + self.transfer_nodes + self.cpu_nodes;
        write!(
            f,
            "cuda: {} of {total} nodes on the GPU ({:.0} % of a profiled pass), {} host-device transfers ({:.0} %), {} on the CPU ({:.0} %{})",
            self.gpu_nodes,
            100.0 * self.gpu_share,
            self.transfer_nodes,
            100.0 * self.transfer_share,
            self.cpu_nodes,
            100.0 * self.cpu_share,
            if self.cpu_ops.is_empty() { String::new() } else { format!(": {}", self.cpu_ops.join(", ")) }
        )
    }
}

/// Which side a plan node runs on, from tract's op names: the CUDA runtime's
/// ops are `Cuda…` (and tract-gpu's shared ones `Gpu…`), its copies
/// `DeviceSync…`; graph inputs and constants do no work and are not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum Side {
    Gpu,
    Transfer,
    Cpu,
    None,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn side_of(op_name: &str) -> Side {
    if op_name.starts_with("Cuda") || op_name.starts_with("Gpu") {
        Side::Gpu
    } else if op_name.starts_with("DeviceSync") {
        Side::Transfer
    } else if op_name == "Source" || op_name == "Const" {
        Side::None
    } else {
        Side::Cpu
    }
}

/// Per node: tract's op name and the time it took in the profiled pass.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn placement(nodes: &[(String, std::time::Duration)]) -> Placement {
    let mut p = Placement {
        gpu_nodes: 0,
        transfer_nodes: 0,
        cpu_nodes: 0,
        gpu_share: 0.0,
        transfer_share: 0.0,
        cpu_share: 0.0,
        cpu_ops: Vec::new(),
    };
    let total: f64 = nodes.iter().filter(|(n, _)| side_of(n) != Side::None).map(|(_, t)| t.as_secs_f64()).sum();
    let share = |t: std::time::Duration| if total > 0.0 { t.as_secs_f64() / total } else { 0.0 };
    for (name, t) in nodes {
        match side_of(name) {
            Side::Gpu => {
                p.gpu_nodes += 1;
                p.gpu_share += share(*t);
            }
            Side::Transfer => {
                p.transfer_nodes += 1;
                p.transfer_share += share(*t);
            }
            Side::Cpu => {
                p.cpu_nodes += 1;
                p.cpu_share += share(*t);
                if !p.cpu_ops.contains(name) {
                    p.cpu_ops.push(name.clone());
                }
            }
            Side::None => {}
        }
    }
    p
}

#[cfg(not(feature = "cuda"))]
const NOT_BUILT: &str = "--backend cuda: this binary was built without the `cuda` feature; build the host with \
     `cargo build --release --features cuda` (no GPU is needed to build) and run it where an NVIDIA driver is installed, \
     or use `--backend cpu`";

/// Refuses, with the reason, when this build or this machine cannot run CUDA.
#[cfg(not(feature = "cuda"))]
pub fn check_available() -> Result<()> {
    bail!(NOT_BUILT)
}

#[cfg(not(feature = "cuda"))]
pub fn prepare(_model: TypedModel, _batch: usize, _side: usize) -> Result<(Plan, Placement)> {
    bail!(NOT_BUILT)
}

/// Refuses, with the reason, when this build or this machine cannot run CUDA.
#[cfg(feature = "cuda")]
pub fn check_available() -> Result<()> {
    tract_cuda::utils::ensure_cuda_runtime_dependencies(
        "--backend cuda needs an NVIDIA GPU with its driver and the CUDA runtime, NVRTC, cuBLAS and cuDNN libraries",
    )
    .map_err(|e| anyhow!("{e:#}; `--backend cpu` runs on this machine"))
}

/// The same preparation as tract's registered CUDA runtime (transform, then
/// optimise, plan without RAM-order optimisation), kept as a plain plan so
/// the engine runs it like the CPU one, then one profiled pass.
#[cfg(feature = "cuda")]
pub fn prepare(model: TypedModel, batch: usize, side: usize) -> Result<(Plan, Placement)> {
    use tract_onnx::tract_core::transform::ModelTransform;
    let mut model = model.into_decluttered()?;
    tract_cuda::CudaTransform.transform(&mut model)?;
    model.optimize()?;
    let options = RunOptions { skip_order_opt_ram: true, ..RunOptions::default() };
    let plan: Plan = Arc::new(TypedSimplePlan::build(model, &options)?);
    let sync = || tract_cuda::with_cuda_stream(|s| s.synchronize().map_err(|e| anyhow!("CUDA synchronize: {e:?}")));
    let input = Tensor::zero::<f32>(&[batch, 3, side, side])?;
    // The first pass compiles kernels; profile the second.
    plan.run(tvec!(input.clone().into()))?;
    sync()?;
    let mut times = vec![std::time::Duration::ZERO; plan.model().nodes().len()];
    let mut state = plan.spawn()?;
    state.run_plan_with_eval(tvec!(input.into()), |ctx, op_state, node, inputs| -> Result<TVec<TValue>> {
        let started = std::time::Instant::now();
        let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs)?;
        // Kernels are launched asynchronously: wait, so each node is charged its own GPU time.
        sync()?;
        times[node.id] += started.elapsed();
        Ok(out)
    })?;
    let nodes: Vec<(String, std::time::Duration)> =
        plan.model().nodes().iter().map(|n| (n.op().name().to_string(), times[n.id])).collect();
    Ok((plan.clone(), placement(&nodes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn placement_counts_sides_and_shares() {
        let ms = Duration::from_millis;
        let nodes: Vec<(String, Duration)> = [
            ("Source", ms(0)),
            ("Const", ms(5)),
            ("DeviceSyncToGpu", ms(1)),
            ("CudaConv", ms(6)),
            ("CudaConv", ms(2)),
            ("DeviceSyncToHost", ms(1)),
            ("MaxPool", ms(8)),
            ("MaxPool", ms(1)),
            ("Softmax", ms(1)),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
        let p = placement(&nodes);
        assert_eq!((p.gpu_nodes, p.transfer_nodes, p.cpu_nodes), (2, 2, 3));
        assert!((p.gpu_share - 0.4).abs() < 1e-12 && (p.transfer_share - 0.1).abs() < 1e-12, "{p:?}");
        assert!((p.cpu_share - 0.5).abs() < 1e-12);
        assert_eq!(p.cpu_ops, ["MaxPool", "Softmax"]);
        assert_eq!(
            p.to_string(),
            "cuda: 2 of 7 nodes on the GPU (40 % of a profiled pass), 2 host-device transfers (10 %), 3 on the CPU (50 %: MaxPool, Softmax)"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_is_refused_with_the_build_command() {
        let e = check_available().unwrap_err().to_string();
        assert!(e.contains("--features cuda") && e.contains("--backend cpu"), "{e}");
    }
}
