//! Where the aarch64 NEON kernels go: a GEMM tile and a depthwise block to
//! match `x86_64`'s AVX2 ones, dispatched to from `gemm` and `depthwise` the
//! same way. None is written yet, so until they exist aarch64 takes the
//! portable path, whose depthwise block already uses the target's native
//! fused multiply-adds (exact there, see `depthwise::depthwise_block`).
