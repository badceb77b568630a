//! quba-device: the lean runner that goes on the board. It evaluates one
//! model on one dataset and streams framed records to stdout, a file or a
//! host over TCP; all metrics are computed on the host (`quba`).

use clap::{Parser, Subcommand};
use quba_edge::suite::{run_device, DeviceArgs};

#[derive(Parser)]
#[command(name = "quba-device", version, about = "Run QUBA probes on this board and stream the records to a host")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Evaluate a model on a dataset and stream records (see `quba eval` for the host side).
    Run(DeviceArgs),
    /// Apply one ImageNet-C corruption to an image or directory (as `quba data corrupt`).
    Corrupt(quba_edge::corrupt::CorruptArgs),
}

fn main() {
    let r = match Cli::parse().cmd {
        Cmd::Run(args) => run_device(&args).map(|_| ()),
        Cmd::Corrupt(args) => quba_edge::corrupt::run_cli(&args).map(|_| ()),
    };
    if let Err(e) = r {
        eprintln!("quba-device: error: {e:#}");
        std::process::exit(1);
    }
}
