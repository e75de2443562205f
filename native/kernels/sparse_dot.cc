// Lexical scores of one query against many documents: argument checks with precise messages,
// the per-thread query tables, the split over threads, and the dispatch to a tier's kernel.
#include "kernels/sparse_dot.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/parallel_for.h"
#include "kernels/sparse_dot_kernels.h"

namespace m3 {
namespace {

// Documents per parallel work item: about 50 to 100 microseconds of work, well above the cost
// of handing it out, and enough items to balance two or more threads.
constexpr int64_t kBlockDocs = 1024;
// Zeroed tables kept between calls (a fresh one costs a 1 MiB allocation and memset for
// BGE-M3's vocabulary), and the largest one worth keeping.
constexpr size_t kMaxIdleTables = 8;
constexpr size_t kMaxPooledEntries = size_t{1} << 22;

[[noreturn]] void Fail(const std::string& message) { throw CoreError("ERR_INPUT", message); }

std::string Describe(float w) {
  if (std::isnan(w)) return "NaN";
  return w > 0 ? "Infinity" : "-Infinity";
}

/// Throws for the first broken rule in one row: row `row` of `what` ("docs row 3"), or `what`
/// itself when row < 0 ("query"); `base` is the row's first position in the flat arrays.
void CheckRow(const char* what, int64_t row, const uint32_t* ids, const float* w, int64_t n, int64_t base,
              int64_t vocab) {
  // Messages are built only on failure: this also runs over every document of the oracle.
  auto at = [&](int64_t p, const char* array) {
    const std::string where = row < 0 ? std::string(what) : std::string(what) + " row " + std::to_string(row);
    return "Invalid " + where + ", position " + std::to_string(p) + " (" + array + "[" + std::to_string(base + p) + "])";
  };
  for (int64_t p = 0; p < n; ++p) {
    if (p > 0 && ids[p] <= ids[p - 1]) {
      Fail(at(p, "ids") + ": id " + std::to_string(ids[p]) + " follows " + std::to_string(ids[p - 1]) +
           "; the ids of a row must be ascending and unique");
    }
    if (ids[p] >= vocab) {
      Fail(at(p, "ids") + ": id " + std::to_string(ids[p]) + " is not below the vocabulary size " +
           std::to_string(vocab) + "; pass the model's vocabulary size as the vocabSize option");
    }
    if (!std::isfinite(w[p])) {
      Fail(at(p, "weights") + ": the weight is " + Describe(w[p]) + "; weights must be finite");
    }
  }
}

/// The offsets rules: start at 0, never decrease, end at nnz.
void CheckOffsets(const SparseRowSet& docs) {
  if (docs.count < 0 || docs.nnz < 0 || !docs.offsets) Fail("Invalid docs: a negative or missing row count");
  if (docs.offsets[0] != 0) {
    Fail("Invalid docs: offsets[0] is " + std::to_string(docs.offsets[0]) + "; offsets must start at 0");
  }
  for (int64_t i = 0; i < docs.count; ++i) {
    if (docs.offsets[i + 1] < docs.offsets[i]) {
      Fail("Invalid docs: offsets[" + std::to_string(i + 1) + "] = " + std::to_string(docs.offsets[i + 1]) +
           " is below offsets[" + std::to_string(i) + "] = " + std::to_string(docs.offsets[i]) +
           "; offsets must not decrease");
    }
  }
  if (docs.offsets[docs.count] != docs.nnz) {
    Fail("Invalid docs: the last offset is " + std::to_string(docs.offsets[docs.count]) + " but ids and weights hold " +
         std::to_string(docs.nnz) + " entries; the last offset must equal their length");
  }
}

/// Every rule on every document, in order, so the first problem is the one reported.
void CheckDocs(const SparseRowSet& docs, int64_t vocab) {
  CheckOffsets(docs);
  for (int64_t i = 0; i < docs.count; ++i) {
    const uint32_t s = docs.offsets[i], e = docs.offsets[i + 1];
    CheckRow("docs", i, docs.ids + s, docs.weights + s, e - s, s, vocab);
  }
}

/// The checks done before any scoring. Copies the query out of the caller's arrays into
/// `ids`/`weights` first, so what is validated is what gets scattered (and later cleared) even
/// if those arrays change meanwhile.
void CheckBefore(const uint32_t* q_ids, const float* q_w, int64_t q_n, const SparseRowSet& docs, int64_t vocab,
                 std::vector<uint32_t>* ids, std::vector<float>* weights) {
  if (vocab < 1 || vocab > kMaxLexicalVocab) {
    Fail("Invalid vocabSize " + std::to_string(vocab) + ": expected an integer from 1 to " +
         std::to_string(kMaxLexicalVocab));
  }
  if (q_n < 0) Fail("Invalid query: negative length");
  ids->assign(q_ids, q_ids + q_n);
  weights->assign(q_w, q_w + q_n);
  CheckRow("query", -1, ids->data(), weights->data(), q_n, 0, vocab);
  CheckOffsets(docs);
}

/// Zeroed float tables shared between calls and threads. A table goes back zeroed: users clear
/// only the entries they wrote, which is what makes the table approach cheap for a short query.
class TablePool {
 public:
  std::vector<float> Take(size_t entries) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < idle_.size(); ++i) {
        if (idle_[i].size() >= entries) {
          std::vector<float> table = std::move(idle_[i]);
          idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
          return table;
        }
      }
    }
    try {
      return std::vector<float>(entries, 0.0f);
    } catch (const std::bad_alloc&) {
      throw CoreError("ERR_RUNTIME", "Out of memory for a lexical score table of " + std::to_string(entries) +
                                         " floats per thread; check vocabSize or use fewer threads");
    }
  }

  void Give(std::vector<float>&& table) {
    if (table.size() > kMaxPooledEntries) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kMaxIdleTables) idle_.push_back(std::move(table));
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<float>> idle_;
};

TablePool& Pool() {
  // Never destroyed: detached scoring threads may still return tables during process exit.
  static TablePool* pool = new TablePool();
  return *pool;
}

/// One table per worker with the query scattered into it; cleared and returned on scope exit.
class QueryTables {
 public:
  QueryTables(const std::vector<uint32_t>& ids, const std::vector<float>& weights, int64_t vocab, int count)
      : ids_(ids) {
    tables_.reserve(static_cast<size_t>(count));
    for (int t = 0; t < count; ++t) {
      tables_.push_back(Pool().Take(static_cast<size_t>(vocab)));
      for (size_t k = 0; k < ids.size(); ++k) tables_.back()[ids[k]] = weights[k];
    }
  }
  ~QueryTables() {
    for (auto& table : tables_) {
      for (uint32_t id : ids_) table[id] = 0.0f;
      Pool().Give(std::move(table));
    }
  }
  QueryTables(const QueryTables&) = delete;
  QueryTables& operator=(const QueryTables&) = delete;
  const float* operator[](int worker) const { return tables_[static_cast<size_t>(worker)].data(); }

 private:
  const std::vector<uint32_t>& ids_;
  std::vector<std::vector<float>> tables_;
};

sparse::TableFn TableKernelFor(IsaTier tier) {
  switch (tier) {
    case IsaTier::kAvx512: return sparse::TableAvx512;
    case IsaTier::kAvx2: return sparse::TableAvx2;
    default: return sparse::TableSerial;
  }
}

/// Whether VP2INTERSECTD runs natively. Of the CPUs that have it, AMD Zen 5 executes it in a few
/// cycles, while Intel Tiger Lake runs a long microcode sequence (slower than the table kernel).
/// Tiger Lake lacks AVX512_BF16, which Zen 5 has, so the two feature bits together tell them
/// apart without naming a vendor or model.
bool NativeIntersect() {
  const CpuFeatures& f = DetectCpuFeatures();
  return f.avx512_vp2intersect && f.avx512_bf16;
}

int64_t Blocks(const SparseRowSet& docs) { return (docs.count + kBlockDocs - 1) / kBlockDocs; }

int Workers(int threads, int64_t blocks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, blocks)));
}

/// Runs `kernel(begin, end, worker)` over blocks of documents on up to `workers` threads; if any
/// call reports a broken rule, throws the first one in document order.
template <typename Kernel>
void RunBlocks(const SparseRowSet& docs, int64_t vocab, int workers, const Kernel& kernel) {
  std::atomic<bool> ok{true};
  ParallelFor(Blocks(docs), workers, [&](int64_t block, int worker) {
    const int64_t begin = block * kBlockDocs, end = std::min(docs.count, begin + kBlockDocs);
    if (!kernel(begin, end, worker)) ok.store(false, std::memory_order_relaxed);
  });
  if (!ok.load()) {
    // Finding no broken rule now means the arrays were changed while the kernels read them.
    CheckDocs(docs, vocab);
    Fail("Invalid docs: the arrays changed while they were being scored; leave them unmodified until the call returns");
  }
}

}  // namespace

void LexicalScoresWith(IsaTier tier, LexicalMethod method, const uint32_t* q_ids, const float* q_w, int64_t q_n,
                       const SparseRowSet& docs, int64_t vocab_size, float* scores, int threads) {
  std::vector<uint32_t> ids;
  std::vector<float> weights;
  CheckBefore(q_ids, q_w, q_n, docs, vocab_size, &ids, &weights);
  const int64_t blocks = Blocks(docs);
  if (blocks == 0) return;
  const int workers = Workers(threads, blocks);
  const uint32_t vocab = static_cast<uint32_t>(vocab_size);
  if (tier > DetectedTier()) tier = DetectedTier();

  if (method == LexicalMethod::kMerge) {
    CheckDocs(docs, vocab_size);
    RunBlocks(docs, vocab_size, workers, [&](int64_t begin, int64_t end, int) {
      sparse::MergeRows(ids.data(), weights.data(), q_n, docs, begin, end, scores);
      return true;
    });
    return;
  }
  if (method == LexicalMethod::kFastest && tier == IsaTier::kAvx512 && q_n <= sparse::kIntersectMaxQuery &&
      NativeIntersect()) {
    RunBlocks(docs, vocab_size, workers, [&](int64_t begin, int64_t end, int) {
      return sparse::IntersectAvx512(ids.data(), weights.data(), q_n, vocab, docs, begin, end, scores);
    });
    return;
  }
  const sparse::TableFn kernel = TableKernelFor(tier);
  // Cleared and returned on every exit, errors included.
  QueryTables tables(ids, weights, vocab_size, workers);
  RunBlocks(docs, vocab_size, workers, [&](int64_t begin, int64_t end, int worker) {
    return kernel(tables[worker], vocab, docs, begin, end, scores);
  });
}

void LexicalScoresOn(IsaTier tier, const uint32_t* q_ids, const float* q_w, int64_t q_n,
                     const SparseRowSet& docs, int64_t vocab_size, float* scores, int threads) {
  LexicalScoresWith(tier, LexicalMethod::kFastest, q_ids, q_w, q_n, docs, vocab_size, scores, threads);
}

void LexicalScores(const uint32_t* q_ids, const float* q_w, int64_t q_n, const SparseRowSet& docs,
                   int64_t vocab_size, float* scores, int threads) {
  LexicalScoresWith(ActiveTier(), LexicalMethod::kFastest, q_ids, q_w, q_n, docs, vocab_size, scores, threads);
}

}  // namespace m3
