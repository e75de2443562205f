// Registration of the kernels' functions (one file each) on the module's public exports, and of
// those that exist for tests and benchmarks only on its `testing` object:
//   maxsim_wrap.cc: maxSim, maxSimSync, quantize, cuda*; testing: fmaPeak
//   sparse_wrap.cc: lexicalScores, lexicalScoresSync; testing: lexicalScorePair
//   index_wrap.cc:  HybridIndexNative, tryLockFile, unlockFile
//   train_wrap.cc:  m3Loss, HeadTrainerNative
//   linear_wrap.cc: testing: linearBf16Forward, linearBf16KernelTimes, bf16Peak
#pragma once
#include <napi.h>

namespace m3js {

void RegisterMaxSim(Napi::Env env, Napi::Object exports, Napi::Object testing);
void RegisterSparse(Napi::Env env, Napi::Object exports, Napi::Object testing);
void RegisterIndex(Napi::Env env, Napi::Object exports);
void RegisterTrain(Napi::Env env, Napi::Object exports);
void RegisterLinear(Napi::Env env, Napi::Object testing);

}  // namespace m3js
