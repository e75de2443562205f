// JS class `HybridIndexNative` (lib/hybrid_index.ts maps caller ids to slots and validates;
// this re-checks what guards memory: lengths, offsets, token ids below the vocabulary).
//   [sync] new HybridIndexNative(dim, vocabSize, colbertFormat | null)
//   [sync] add(dense, sparseOffsets, ids, weights, colbertOffsets | null, colbert | null) -> Uint32Array slots
//   [sync] remove(slots: Uint32Array)
//   [sync] compact() -> Uint32Array (old slot of each new slot)
//   [sync] stats() -> { slots, live, colbertBytesPerDocument }
//   [sync] search(dense, ids, weights, colbert | null, params) -> { slots, score, dense, sparse, colbert }
//          params.allowed: an optional Uint8Array of one byte per slot, nonzero where a slot may be
//          returned (a metadata filter); every route and the exhaustive scan honour it
//   [sync] searchBatch(dense, sparseOffsets, ids, weights, colbertOffsets | null, colbert | null, params)
//          -> { offsets, slots, score, dense, sparse, colbert } (queries on params.threads threads)
//   [sync] exportState() -> the stored arrays (compacted index) / importState(state) into an empty one
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "base/error.h"
#include "base/parallel_for.h"
#include "index/dir_lock.h"
#include "index/hybrid_index.h"

namespace m3js {
namespace {

template <typename T>
Napi::TypedArrayOf<T> Typed(const Napi::Value& v, napi_typedarray_type type, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw MakeError(v.Env(), "ERR_INPUT", "Expected " + what);
  return v.As<Napi::TypedArrayOf<T>>();
}

/// Checks one sparse row: ascending unique ids below the vocabulary, finite weights.
void CheckSparseRow(Napi::Env env, const uint32_t* ids, const float* w, int64_t n, int64_t vocab, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] >= vocab)
      throw MakeError(env, "ERR_INPUT", what + ": token id " + std::to_string(ids[i]) + " is not below the index's vocabSize " +
                                            std::to_string(vocab) + " (vectors from a different model?)");
    if (i > 0 && ids[i] <= ids[i - 1]) throw MakeError(env, "ERR_INPUT", what + ": ids must be ascending and unique");
    if (!m3::IndexValueOk(w[i]))
      throw MakeError(env, "ERR_INPUT", what + ": weights must be finite and at most " + std::to_string(m3::kMaxIndexValue) +
                                            " in magnitude, not " + std::to_string(w[i]));
  }
}

void CheckFinite(Napi::Env env, const float* x, size_t n, const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    if (m3::IndexValueOk(x[i])) continue;
    throw MakeError(env, "ERR_INPUT", what + (std::isfinite(x[i]) ? " holds " + std::to_string(x[i]) + ", beyond the largest magnitude of " +
                                                                        std::to_string(m3::kMaxIndexValue) + " (vectors are unit rows),"
                                                                  : std::string(" holds a non-finite value")) +
                                          " at element " + std::to_string(i));
  }
}

/// Texts of an encode() result as the index takes them (documents for add, queries for
/// searchBatch): args[first..first+5] = dense, sparse offsets, ids, weights, ColBERT offsets,
/// ColBERT vectors. Checks everything that guards memory and the values' rules.
struct EncodedBatch {
  size_t n = 0;
  const float* dense = nullptr;
  const uint32_t* offsets = nullptr;
  const uint32_t* ids = nullptr;
  const float* weights = nullptr;
  const uint32_t* colbert_offsets = nullptr;  // null without ColBERT
  const float* colbert = nullptr;

  const float* colbert_of(size_t i, int64_t dim) const { return colbert ? colbert + static_cast<size_t>(colbert_offsets[i]) * dim : nullptr; }
  int64_t colbert_rows(size_t i) const { return colbert ? colbert_offsets[i + 1] - colbert_offsets[i] : 0; }
};

/// `colbert`: "required", "optional" (used when both arrays are given) or ignored otherwise.
EncodedBatch ReadEncodedBatch(const Napi::CallbackInfo& info, size_t first, const m3::IndexConfig& c, const std::string& what,
                              const std::string& colbert) {
  Napi::Env env = info.Env();
  EncodedBatch b;
  auto dense = Typed<float>(info[first], napi_float32_array, "a Float32Array of " + what + " dense vectors");
  auto offsets = Typed<uint32_t>(info[first + 1], napi_uint32_array, "a Uint32Array of " + what + " sparse offsets");
  auto ids = Typed<uint32_t>(info[first + 2], napi_uint32_array, "a Uint32Array of " + what + " sparse ids");
  auto weights = Typed<float>(info[first + 3], napi_float32_array, "a Float32Array of " + what + " sparse weights");
  b.n = offsets.ElementLength() == 0 ? 0 : offsets.ElementLength() - 1;
  if (dense.ElementLength() != b.n * static_cast<size_t>(c.dim))
    throw MakeError(env, "ERR_INPUT", what + " dense vectors: expected " + std::to_string(b.n) + " x " + std::to_string(c.dim) + " floats");
  if (ids.ElementLength() != weights.ElementLength() || (b.n > 0 && (offsets[0] != 0 || offsets[b.n] != ids.ElementLength())))
    throw MakeError(env, "ERR_INPUT", what + " sparse vectors: offsets, ids and weights do not agree");
  CheckFinite(env, dense.Data(), dense.ElementLength(), what + " dense vectors");
  for (size_t i = 0; i < b.n; ++i) {
    if (offsets[i + 1] < offsets[i]) throw MakeError(env, "ERR_INPUT", what + " sparse offsets must be non-decreasing");
    CheckSparseRow(env, ids.Data() + offsets[i], weights.Data() + offsets[i], offsets[i + 1] - offsets[i], c.vocab_size,
                   what + " " + std::to_string(i) + " sparse row");
  }
  b.dense = dense.Data();
  b.offsets = offsets.Data();
  b.ids = ids.Data();
  b.weights = weights.Data();
  const bool given = info[first + 4].IsTypedArray() && info[first + 5].IsTypedArray();
  if (colbert == "required" || (colbert == "optional" && given)) {
    auto co = Typed<uint32_t>(info[first + 4], napi_uint32_array, "a Uint32Array of " + what + " ColBERT offsets");
    auto cv = Typed<float>(info[first + 5], napi_float32_array, "a Float32Array of " + what + " ColBERT vectors");
    if (co.ElementLength() != b.n + 1 || (b.n > 0 && co[0] != 0) || static_cast<uint64_t>(co[b.n]) * c.dim != cv.ElementLength())
      throw MakeError(env, "ERR_INPUT", what + " ColBERT vectors: offsets and data do not agree with " + std::to_string(b.n) +
                                           " texts of dim " + std::to_string(c.dim));
    for (size_t i = 0; i < b.n; ++i)
      if (co[i + 1] < co[i]) throw MakeError(env, "ERR_INPUT", what + " ColBERT offsets must be non-decreasing");
    CheckFinite(env, cv.Data(), cv.ElementLength(), what + " ColBERT vectors");
    b.colbert_offsets = co.Data();
    b.colbert = cv.Data();
  }
  return b;
}

class HybridIndexWrap : public Napi::ObjectWrap<HybridIndexWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "HybridIndexNative",
                       {InstanceMethod<&HybridIndexWrap::Add>("add"), InstanceMethod<&HybridIndexWrap::Remove>("remove"),
                        InstanceMethod<&HybridIndexWrap::Compact>("compact"), InstanceMethod<&HybridIndexWrap::Stats>("stats"),
                        InstanceMethod<&HybridIndexWrap::Search>("search"),
                        InstanceMethod<&HybridIndexWrap::SearchBatch>("searchBatch"),
                        InstanceMethod<&HybridIndexWrap::ExportState>("exportState"),
                        InstanceMethod<&HybridIndexWrap::ImportState>("importState")});
  }

  explicit HybridIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HybridIndexWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber())
      throw MakeError(env, "ERR_INPUT", "HybridIndexNative(dim, vocabSize, colbertFormat)");
    m3::IndexConfig config;
    config.dim = info[0].As<Napi::Number>().Int64Value();
    config.vocab_size = info[1].As<Napi::Number>().Int64Value();
    if (info[2].IsString()) {
      config.colbert = true;
      if (!m3::ParseVectorFormat(info[2].As<Napi::String>().Utf8Value(), &config.colbert_format))
        throw MakeError(env, "ERR_INPUT", "colbert format must be 'f32', 'bf16' or 'i8'");
    }
    GuardSync(env, [&]() -> Napi::Value {
      index_ = std::make_unique<m3::HybridIndex>(config);
      return env.Undefined();
    }, "creating the index");
  }

 private:
  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const m3::IndexConfig& c = index_->config();
    const EncodedBatch b = ReadEncodedBatch(info, 0, c, "document", c.colbert ? "required" : "ignored");
    return GuardSync(env, [&]() -> Napi::Value {
      std::vector<uint32_t> slots(b.n);
      for (size_t i = 0; i < b.n; ++i) {
        slots[i] = index_->Add(b.dense + i * c.dim, b.ids + b.offsets[i], b.weights + b.offsets[i], b.offsets[i + 1] - b.offsets[i],
                               b.colbert_of(i, c.dim), b.colbert_rows(i));
      }
      return ToTypedArray(env, std::move(slots));
    }, "add");
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    auto slots = Typed<uint32_t>(info[0], napi_uint32_array, "a Uint32Array of slots");
    for (size_t i = 0; i < slots.ElementLength(); ++i) index_->Remove(slots[i]);
    return info.Env().Undefined();
  }

  Napi::Value Compact(const Napi::CallbackInfo& info) {
    return GuardSync(info.Env(), [&]() -> Napi::Value { return ToTypedArray(info.Env(), index_->Compact()); }, "compact");
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("slots", Napi::Number::New(env, static_cast<double>(index_->slots())));
    o.Set("live", Napi::Number::New(env, static_cast<double>(index_->live())));
    o.Set("colbertBytesPerDocument", Napi::Number::New(env, index_->ColbertBytesPerDocument()));
    return o;
  }

  Napi::Value Search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const m3::IndexConfig& c = index_->config();
    auto dense = Typed<float>(info[0], napi_float32_array, "a Float32Array query vector");
    auto ids = Typed<uint32_t>(info[1], napi_uint32_array, "a Uint32Array of query ids");
    auto weights = Typed<float>(info[2], napi_float32_array, "a Float32Array of query weights");
    if (dense.ElementLength() != static_cast<size_t>(c.dim))
      throw MakeError(env, "ERR_INPUT", "query dense vector: expected " + std::to_string(c.dim) + " floats, got " + std::to_string(dense.ElementLength()));
    if (ids.ElementLength() != weights.ElementLength()) throw MakeError(env, "ERR_INPUT", "query sparse ids and weights differ in length");
    CheckFinite(env, dense.Data(), dense.ElementLength(), "query dense vector");
    CheckSparseRow(env, ids.Data(), weights.Data(), static_cast<int64_t>(ids.ElementLength()), c.vocab_size, "query sparse row");
    const float* colbert = nullptr;
    int64_t rows = 0;
    if (info[3].IsTypedArray()) {
      auto cv = Typed<float>(info[3], napi_float32_array, "a Float32Array of query ColBERT vectors");
      if (cv.ElementLength() % static_cast<size_t>(c.dim) != 0)
        throw MakeError(env, "ERR_INPUT", "query ColBERT vectors: length is not a multiple of dim " + std::to_string(c.dim));
      CheckFinite(env, cv.Data(), cv.ElementLength(), "query ColBERT vectors");
      colbert = cv.Data();
      rows = static_cast<int64_t>(cv.ElementLength()) / c.dim;
    }
    m3::SearchParams params = ReadParams(info[4]);
    ReadAllowed(info[4], &params);
    Napi::Value given = info[4].As<Napi::Object>().Get("denseSlots");
    if (given.IsTypedArray()) {
      auto slots = Typed<uint32_t>(given, napi_uint32_array, "a Uint32Array for denseSlots");
      params.dense_slots = slots.Data();  // read synchronously below; is_live() bounds-checks each
      params.dense_slot_count = static_cast<int64_t>(slots.ElementLength());
    }
    std::vector<m3::SearchHit> hits;
    GuardSync(env, [&]() -> Napi::Value {
      hits = index_->Search(dense.Data(), ids.Data(), weights.Data(), static_cast<int64_t>(ids.ElementLength()), colbert, rows, params);
      return env.Undefined();
    }, "search");
    return HitsToJs(env, hits, nullptr);
  }

  /// Many queries on `threads` threads (one query per thread at a time):
  /// searchBatch(dense [q x dim], sparseOffsets [q+1], ids, weights, colbertOffsets | null, colbert | null, params)
  /// -> { offsets [q+1], slots, score, dense, sparse, colbert }.
  Napi::Value SearchBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const m3::IndexConfig& c = index_->config();
    const EncodedBatch b = ReadEncodedBatch(info, 0, c, "query", "optional");
    m3::SearchParams params = ReadParams(info[6]);
    ReadAllowed(info[6], &params);  // read by the worker threads below, while this call holds the array
    const int threads = std::max(1, params.threads);
    params.threads = 1;
    std::vector<std::vector<m3::SearchHit>> results(b.n);
    GuardSync(env, [&]() -> Napi::Value {
      // Raw pointers only: the worker threads must not touch N-API objects.
      m3::ParallelFor(static_cast<int64_t>(b.n), threads, [&](int64_t q, int) {
        results[q] = index_->Search(b.dense + q * c.dim, b.ids + b.offsets[q], b.weights + b.offsets[q], b.offsets[q + 1] - b.offsets[q],
                                    b.colbert_of(q, c.dim), b.colbert_rows(q), params);
      });
      return env.Undefined();
    }, "searchBatch");
    std::vector<uint32_t> result_offsets{0};
    std::vector<m3::SearchHit> all;
    for (auto& r : results) {
      all.insert(all.end(), r.begin(), r.end());
      result_offsets.push_back(static_cast<uint32_t>(all.size()));
    }
    return HitsToJs(env, all, &result_offsets);
  }

  static m3::SearchParams ReadParams(const Napi::Value& value) {
    if (!value.IsObject()) throw MakeError(value.Env(), "ERR_INPUT", "search params must be an object");
    Napi::Object p = value.As<Napi::Object>();
    auto num = [&](const char* key, double fallback) { return p.Get(key).IsNumber() ? p.Get(key).As<Napi::Number>().DoubleValue() : fallback; };
    auto flag = [&](const char* key, bool fallback) { return p.Get(key).IsBoolean() ? p.Get(key).As<Napi::Boolean>().Value() : fallback; };
    m3::SearchParams params;
    params.k = static_cast<int64_t>(num("k", 10));
    params.w_dense = num("wDense", 1.0);
    params.w_sparse = num("wSparse", 0.3);
    params.w_colbert = num("wColbert", 1.0);
    params.dense_candidates = static_cast<int64_t>(num("denseCandidates", 200));
    params.sparse_candidates = static_cast<int64_t>(num("sparseCandidates", 200));
    params.dense_route = flag("denseRoute", true);
    params.sparse_route = flag("sparseRoute", true);
    params.exhaustive = flag("exhaustive", false);
    params.threads = static_cast<int>(num("threads", 1));
    return params;
  }

  /// params.allowed, when given: a Uint8Array of one byte per slot (a filter's mask).
  void ReadAllowed(const Napi::Value& value, m3::SearchParams* params) const {
    Napi::Value given = value.As<Napi::Object>().Get("allowed");
    if (given.IsUndefined() || given.IsNull()) return;
    auto allowed = Typed<uint8_t>(given, napi_uint8_array, "a Uint8Array for params.allowed (one byte per slot)");
    if (allowed.ElementLength() != static_cast<size_t>(index_->slots()))
      throw MakeError(value.Env(), "ERR_INPUT", "params.allowed has " + std::to_string(allowed.ElementLength()) +
                                                    " bytes but the index has " + std::to_string(index_->slots()) +
                                                    " slots; build the mask after the last add or remove");
    params->allowed = allowed.Data();
  }

  static Napi::Object HitsToJs(Napi::Env env, const std::vector<m3::SearchHit>& hits, std::vector<uint32_t>* offsets) {
    std::vector<uint32_t> slots(hits.size());
    std::vector<double> score(hits.size()), d(hits.size()), s(hits.size()), cb(hits.size());
    for (size_t i = 0; i < hits.size(); ++i) {
      slots[i] = hits[i].slot;
      score[i] = hits[i].score;
      d[i] = hits[i].dense;
      s[i] = hits[i].sparse;
      cb[i] = hits[i].colbert;
    }
    Napi::Object out = Napi::Object::New(env);
    if (offsets) out.Set("offsets", ToTypedArray(env, std::move(*offsets)));
    out.Set("slots", ToTypedArray(env, std::move(slots)));
    out.Set("score", ToTypedArray(env, std::move(score)));
    out.Set("dense", ToTypedArray(env, std::move(d)));
    out.Set("sparse", ToTypedArray(env, std::move(s)));
    out.Set("colbert", ToTypedArray(env, std::move(cb)));
    return out;
  }

  Napi::Value ExportState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return GuardSync(env, [&]() -> Napi::Value {
      m3::HybridIndex::State st = index_->Export();
      Napi::Object o = Napi::Object::New(env);
      o.Set("dense", ToTypedArray(env, std::move(st.dense)));
      o.Set("sparseOffsets", ToTypedArray(env, std::move(st.sparse_offsets)));
      o.Set("sparseIds", ToTypedArray(env, std::move(st.sparse_ids)));
      o.Set("sparseWeights", ToTypedArray(env, std::move(st.sparse_weights)));
      o.Set("colbertOffsets", ToTypedArray(env, std::move(st.colbert_offsets)));
      o.Set("colbertF32", ToTypedArray(env, std::move(st.colbert_f32)));
      o.Set("colbertBf16", ToTypedArray(env, std::move(st.colbert_bf16)));
      o.Set("colbertI8", ToTypedArray(env, std::move(st.colbert_i8)));
      o.Set("colbertScales", ToTypedArray(env, std::move(st.colbert_scales)));
      return o;
    }, "exportState");
  }

  Napi::Value ImportState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw MakeError(env, "ERR_INPUT", "importState(state)");
    Napi::Object o = info[0].As<Napi::Object>();
    auto copy = [&](const char* key, napi_typedarray_type type, auto* out) {
      using T = typename std::remove_pointer_t<decltype(out)>::value_type;
      auto a = Typed<T>(o.Get(key), type, std::string("a typed array for ") + key);
      out->assign(a.Data(), a.Data() + a.ElementLength());
    };
    m3::HybridIndex::State st;
    copy("dense", napi_float32_array, &st.dense);
    copy("sparseOffsets", napi_uint32_array, &st.sparse_offsets);
    copy("sparseIds", napi_uint32_array, &st.sparse_ids);
    copy("sparseWeights", napi_float32_array, &st.sparse_weights);
    copy("colbertOffsets", napi_uint32_array, &st.colbert_offsets);
    copy("colbertF32", napi_float32_array, &st.colbert_f32);
    copy("colbertBf16", napi_uint16_array, &st.colbert_bf16);
    copy("colbertI8", napi_int8_array, &st.colbert_i8);
    copy("colbertScales", napi_float32_array, &st.colbert_scales);
    return GuardSync(env, [&]() -> Napi::Value {
      index_->Import(std::move(st));
      return env.Undefined();
    }, "importState");
  }

  std::unique_ptr<m3::HybridIndex> index_;
};

}  // namespace

/// tryLockFile(path) -> fd, or -1 while another holds it.
Napi::Value TryLockFileJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw MakeError(env, "ERR_INPUT", "tryLockFile: expected a path");
  try {
    return Napi::Number::New(env, m3::TryLockFile(info[0].As<Napi::String>().Utf8Value()));
  } catch (const m3::CoreError& e) {
    throw MakeError(env, e.code(), e.what());
  }
}

/// unlockFile(fd, path, remove)
Napi::Value UnlockFileJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsBoolean())
    throw MakeError(env, "ERR_INPUT", "unlockFile: expected (fd, path, remove)");
  m3::UnlockFile(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::Boolean>().Value());
  return env.Undefined();
}

void RegisterIndex(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = HybridIndexWrap::Define(env);
  // Kept alive by the exports object, which holds the constructor.
  exports.Set("HybridIndexNative", ctor);
  exports.Set("tryLockFile", Napi::Function::New(env, TryLockFileJs, "tryLockFile"));
  exports.Set("unlockFile", Napi::Function::New(env, UnlockFileJs, "unlockFile"));
}

}  // namespace m3js
