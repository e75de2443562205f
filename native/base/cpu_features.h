// CPU capability detection from CPUID/XGETBV bits (never vendor or model names) and the
// instruction-set tier the kernels dispatch to.
#pragma once
#include <cstdint>
#include <string>

namespace m3 {

/// Kernel tiers, lowest first. A tier is usable only when the CPU and the OS (XSAVE state) allow it.
enum class IsaTier : int { kSerial = 0, kAvx2 = 1, kAvx512 = 2 };

/// Capability bits as read from CPUID leaf 1 / leaf 7 and XCR0.
struct CpuFeatures {
  bool avx2 = false, fma = false, avx_vnni = false;
  bool f16c = false;  // fp16 <-> fp32 conversions (with the OS saving YMM state)
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, avx512_vnni = false, avx512_vp2intersect = false;
};

/// The features of the running CPU (read once, then cached).
const CpuFeatures& DetectCpuFeatures();

/// The best tier the CPU supports.
IsaTier DetectedTier();

/// The tier the kernels use: the detected one, lowered by the BGE_M3_ISA environment variable
/// (serial|avx2|avx512) or by SetActiveTier. Never higher than the detected tier.
IsaTier ActiveTier();

/// Forces a lower tier (tests and benchmarks); a tier above the detected one is clamped to it.
/// Returns the tier now in use.
IsaTier SetActiveTier(IsaTier tier);

/// "serial", "avx2" or "avx512".
const char* IsaTierName(IsaTier tier);

/// Parses "serial"/"avx2"/"avx512"; returns false for anything else.
bool ParseIsaTier(const std::string& name, IsaTier* out);

}  // namespace m3
