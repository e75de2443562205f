// Measures this core's fp32 FMA peak (GFLOP/s) with independent FMA chains, so benchmarks can
// report kernels as a fraction of what the machine actually does (not a datasheet figure).
#pragma once
#include "base/cpu_features.h"

namespace m3 {

/// Runs FMA chains on the given tier (AVX-512: zmm, AVX2: ymm, serial: scalar) for about
/// `seconds` and returns the best GFLOP/s of several rounds, on the calling thread.
double MeasureFmaPeakGflops(IsaTier tier, double seconds);

/// The same for AVX-512 BF16's `vdpbf16ps` (32 multiply-adds each); 0 on a CPU without it.
double MeasureBf16PeakGflops(double seconds);

}  // namespace m3
