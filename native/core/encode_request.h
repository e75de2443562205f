// An encode request as the TypeScript layer plans it (tokenized texts, processing order and
// batch boundaries), its checks, and the pack stage: one batch padded into [batch, len] inputs.
#pragma once
#include <cstdint>
#include <vector>

#include "core/outputs.h"

namespace m3 {

/// Tokenized texts and the batch plan (made by the TypeScript layer).
struct EncodeRequest {
  std::vector<int32_t> ids;          // all texts' token ids, <s> ... </s> each
  std::vector<uint32_t> offsets;     // count + 1; text i is ids[offsets[i], offsets[i+1])
  std::vector<uint32_t> order;       // text indices in processing order
  std::vector<uint32_t> batch_ends;  // exclusive ends into `order`, one per batch
  OutputSet outputs{OutputKind::kDense, OutputKind::kSparse};

  size_t count() const { return offsets.empty() ? 0 : offsets.size() - 1; }
  int64_t length(uint32_t text) const { return static_cast<int64_t>(offsets[text + 1] - offsets[text]); }
  const int32_t* text_ids(uint32_t text) const { return ids.data() + offsets[text]; }
};

/// Throws CoreError(ERR_INPUT) unless the offsets, order and batch ends describe every text once.
void ValidateRequest(const EncodeRequest& request);

/// One batch of a request, padded: ids (<pad> = 1) and mask are [batch x len], row b holding
/// text order[begin + b].
struct PaddedBatch {
  uint32_t begin = 0;  // index into the request's order
  int64_t batch = 0, len = 0;
  std::vector<int64_t> ids, mask;

  uint32_t text(const EncodeRequest& request, int64_t b) const { return request.order[begin + b]; }
};

/// Pads order[begin, end) into `out` (its buffers are reused from batch to batch).
void PackBatch(const EncodeRequest& request, uint32_t begin, uint32_t end, PaddedBatch* out);

}  // namespace m3
