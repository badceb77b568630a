//! The integration tests: one binary, so tract and the crate are linked once
//! for all of them. Each module tests one capability through the binaries
//! or the library; `util` holds what they share.

#[macro_use]
mod util;

mod adversarial_suite;
mod attack;
mod bench;
mod compare;
mod corruption_suite;
mod cuda;
mod datasets;
mod families;
mod grad_errors;
mod grad_ops;
mod grad_parity;
mod html_report;
mod int8_parity;
mod lite0_real;
mod mapping_parity;
mod metrics_parity;
mod pil_resize;
mod pillow_jpeg;
mod qemu;
mod qemu_corrupt;
mod resume;
mod shard;
mod softmax_outputs;
mod spine;
mod ssh;
mod what_ran;
