// Lexical-score functions of the raw native module (lib/lexical.ts validates their arguments;
// the core re-checks what guards memory). Typed arrays are read in place, never copied.
//   [sync]  lexicalScoresSync(queryIds, queryWeights, offsets, ids, weights, vocabSize, threads, isa?)
//             -> Float32Array; isa forces a tier ('serial' | 'avx2' | 'avx512'), the AVX-512
//             table kernel ('avx512-gather') or the oracle ('merge')
//   [async] lexicalScores(queryIds, queryWeights, offsets, ids, weights, vocabSize, threads)
//             -> Promise<Float32Array>, computed on a thread the addon owns
//   [sync]  lexicalScorePair(aIds, aWeights, bIds, bWeights) -> number (sorted merge)
#include <napi.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "base/error.h"
#include "kernels/sparse_dot.h"

namespace m3js {
namespace {

template <typename T>
Napi::TypedArrayOf<T> View(const Napi::CallbackInfo& info, size_t index, napi_typedarray_type type,
                           const char* what) {
  const Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw MakeError(info.Env(), "ERR_INPUT", std::string("Expected a typed array for ") + what);
  }
  return value.As<Napi::TypedArrayOf<T>>();
}

int64_t Integer(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (!info[index].IsNumber()) throw MakeError(info.Env(), "ERR_INPUT", std::string("Expected a number for ") + what);
  return info[index].As<Napi::Number>().Int64Value();
}

/// The arguments shared by the sync and async calls, as plain pointers into the JS arrays (a
/// baton the worker thread can use without touching N-API); valid while the JS values live.
struct Request {
  const uint32_t* q_ids = nullptr;
  const float* q_w = nullptr;
  int64_t q_n = 0;
  m3::SparseRowSet docs;
  int64_t vocab = 0;
  int threads = 1;
};

Request ReadRequest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto q_ids = View<uint32_t>(info, 0, napi_uint32_array, "queryIds (Uint32Array)");
  const auto q_w = View<float>(info, 1, napi_float32_array, "queryWeights (Float32Array)");
  const auto offsets = View<uint32_t>(info, 2, napi_uint32_array, "offsets (Uint32Array)");
  const auto ids = View<uint32_t>(info, 3, napi_uint32_array, "ids (Uint32Array)");
  const auto weights = View<float>(info, 4, napi_float32_array, "weights (Float32Array)");
  if (q_ids.ElementLength() != q_w.ElementLength()) throw MakeError(env, "ERR_INPUT", "queryIds and queryWeights differ in length");
  if (ids.ElementLength() != weights.ElementLength()) throw MakeError(env, "ERR_INPUT", "ids and weights differ in length");
  if (offsets.ElementLength() < 1) throw MakeError(env, "ERR_INPUT", "offsets must hold at least one entry (0)");
  Request r;
  r.q_ids = q_ids.Data();
  r.q_w = q_w.Data();
  r.q_n = static_cast<int64_t>(q_ids.ElementLength());
  r.docs.count = static_cast<int64_t>(offsets.ElementLength()) - 1;
  r.docs.offsets = offsets.Data();
  r.docs.ids = ids.Data();
  r.docs.weights = weights.Data();
  r.docs.nnz = static_cast<int64_t>(ids.ElementLength());
  r.vocab = Integer(info, 5, "vocabSize");
  r.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(Integer(info, 6, "threads"), 1024)));
  return r;
}

/// The kernel names of lexicalScoresSync's `isa` argument: a tier (its fastest method), the
/// AVX-512 table kernel alone, or the oracle.
bool ParseKernel(const std::string& name, m3::IsaTier* tier, m3::LexicalMethod* method) {
  *method = m3::LexicalMethod::kFastest;
  if (name == "merge") {
    *tier = m3::IsaTier::kSerial;
    *method = m3::LexicalMethod::kMerge;
    return true;
  }
  if (name == "avx512-gather") {
    *tier = m3::IsaTier::kAvx512;
    *method = m3::LexicalMethod::kTable;
    return true;
  }
  return m3::ParseIsaTier(name, tier);
}

Napi::Value LexicalScoresSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Request r = ReadRequest(info);
  m3::IsaTier tier = m3::ActiveTier();
  m3::LexicalMethod method = m3::LexicalMethod::kFastest;
  if (info.Length() > 7 && !info[7].IsUndefined()) {
    if (!info[7].IsString() || !ParseKernel(info[7].As<Napi::String>().Utf8Value(), &tier, &method)) {
      throw MakeError(env, "ERR_INPUT", "Expected 'serial', 'avx2', 'avx512', 'avx512-gather' or 'merge' for isa");
    }
  }
  return GuardSync(env, [&] {
    std::vector<float> scores(static_cast<size_t>(r.docs.count));
    m3::LexicalScoresWith(tier, method, r.q_ids, r.q_w, r.q_n, r.docs, r.vocab, scores.data(), r.threads);
    return ToTypedArray(env, std::move(scores));
  }, "lexicalScoresSync");
}

Napi::Value LexicalScoresAsync(const Napi::CallbackInfo& info) {
  const Request r = ReadRequest(info);
  auto work = [r]() -> Outcome {
    auto scores = std::make_shared<std::vector<float>>(static_cast<size_t>(r.docs.count));
    m3::LexicalScores(r.q_ids, r.q_w, r.q_n, r.docs, r.vocab, scores->data(), r.threads);
    return Outcome{[scores](Napi::Env env) -> Napi::Value { return ToTypedArray(env, std::move(*scores)); }, "", ""};
  };
  // The arrays are read on the worker thread: keep them alive until the promise settles.
  return RunDetached(info.Env(), work, {info[0], info[1], info[2], info[3], info[4]});
}

Napi::Value LexicalScorePair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto a_ids = View<uint32_t>(info, 0, napi_uint32_array, "aIds (Uint32Array)");
  const auto a_w = View<float>(info, 1, napi_float32_array, "aWeights (Float32Array)");
  const auto b_ids = View<uint32_t>(info, 2, napi_uint32_array, "bIds (Uint32Array)");
  const auto b_w = View<float>(info, 3, napi_float32_array, "bWeights (Float32Array)");
  if (a_ids.ElementLength() != a_w.ElementLength() || b_ids.ElementLength() != b_w.ElementLength()) {
    throw MakeError(env, "ERR_INPUT", "ids and weights of a row differ in length");
  }
  return Napi::Number::New(env, m3::LexicalScorePair(a_ids.Data(), a_w.Data(), static_cast<int64_t>(a_ids.ElementLength()),
                                                     b_ids.Data(), b_w.Data(), static_cast<int64_t>(b_ids.ElementLength())));
}

}  // namespace

void RegisterSparse(Napi::Env env, Napi::Object exports, Napi::Object testing) {
  exports.Set("lexicalScoresSync", Napi::Function::New(env, LexicalScoresSync, "lexicalScoresSync"));
  exports.Set("lexicalScores", Napi::Function::New(env, LexicalScoresAsync, "lexicalScores"));
  testing.Set("lexicalScorePair", Napi::Function::New(env, LexicalScorePair, "lexicalScorePair"));
}

}  // namespace m3js
