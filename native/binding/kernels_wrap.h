// Registration of the scoring kernels' functions on the module's exports (one file each).
//   maxsim_wrap.cc: maxSim, maxSimSync, quantize
//   sparse_wrap.cc: lexicalScores, lexicalScoresSync, lexicalScorePair
//   index_wrap.cc:  HybridIndexNative
//   train_wrap.cc:  m3Loss
//   linear_wrap.cc: linearBf16Forward, linearBf16KernelTimes, bf16Peak
#pragma once
#include <napi.h>

namespace m3js {

void RegisterMaxSim(Napi::Env env, Napi::Object exports);
void RegisterSparse(Napi::Env env, Napi::Object exports);
void RegisterIndex(Napi::Env env, Napi::Object exports);
void RegisterTrain(Napi::Env env, Napi::Object exports);
void RegisterLinear(Napi::Env env, Napi::Object exports);

}  // namespace m3js
