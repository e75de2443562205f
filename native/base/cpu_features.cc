#include "base/cpu_features.h"

#include <atomic>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace m3 {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t ReadXcr0() {
  uint32_t eax = 0, edx = 0;
  // xgetbv with ecx=0; encoded as bytes so no -mxsave is needed.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Read() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool fma = (c >> 12) & 1;
  const bool f16c = (c >> 29) & 1;
  if (!osxsave) return f;
  const uint64_t xcr0 = ReadXcr0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_avx) return f;
  f.f16c = f16c;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.fma = fma;
  f.avx2 = (b >> 5) & 1;
  if (os_avx512) {
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512_vnni = (c >> 11) & 1;
    f.avx512_vp2intersect = (d >> 8) & 1;
  }
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx_vnni = (a1 >> 4) & 1;
  if (os_avx512) f.avx512_bf16 = (a1 >> 5) & 1;
  return f;
}
#else
CpuFeatures Read() { return CpuFeatures{}; }
#endif

IsaTier TierOf(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma) return IsaTier::kAvx512;
  if (f.avx2 && f.fma) return IsaTier::kAvx2;
  return IsaTier::kSerial;
}

IsaTier InitialTier() {
  IsaTier tier = TierOf(DetectCpuFeatures());
  if (const char* env = std::getenv("BGE_M3_ISA")) {
    IsaTier wanted;
    if (ParseIsaTier(env, &wanted) && wanted < tier) tier = wanted;
  }
  return tier;
}

std::atomic<int>& ActiveSlot() {
  static std::atomic<int> slot{static_cast<int>(InitialTier())};
  return slot;
}

}  // namespace

const CpuFeatures& DetectCpuFeatures() {
  static const CpuFeatures features = Read();
  return features;
}

IsaTier DetectedTier() { return TierOf(DetectCpuFeatures()); }

IsaTier ActiveTier() { return static_cast<IsaTier>(ActiveSlot().load(std::memory_order_relaxed)); }

IsaTier SetActiveTier(IsaTier tier) {
  if (tier > DetectedTier()) tier = DetectedTier();
  ActiveSlot().store(static_cast<int>(tier), std::memory_order_relaxed);
  return tier;
}

const char* IsaTierName(IsaTier tier) {
  switch (tier) {
    case IsaTier::kAvx512: return "avx512";
    case IsaTier::kAvx2: return "avx2";
    default: return "serial";
  }
}

bool ParseIsaTier(const std::string& name, IsaTier* out) {
  if (name == "serial") *out = IsaTier::kSerial;
  else if (name == "avx2") *out = IsaTier::kAvx2;
  else if (name == "avx512") *out = IsaTier::kAvx512;
  else return false;
  return true;
}

}  // namespace m3
