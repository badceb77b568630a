//! Hand-written SIMD kernels, one module per architecture, each compiled only
//! for its own target. The portable kernels in `gemm` and `depthwise` are
//! what every other target runs, and the reference these must equal code for
//! code; they call in here only under `#[cfg(target_arch = ...)]`, after a
//! run-time check of the CPU's features, so no architecture needs stand-ins
//! for another's functions.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

#[cfg(target_arch = "aarch64")]
mod aarch64;
