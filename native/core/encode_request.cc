#include "core/encode_request.h"

#include <algorithm>
#include <string>

#include "base/error.h"

namespace m3 {

void ValidateRequest(const EncodeRequest& r) {
  if (r.offsets.empty() || r.offsets.front() != 0 || r.offsets.back() != r.ids.size())
    throw CoreError("ERR_INPUT", "encode: token offsets must start at 0 and end at the id count.");
  const size_t count = r.offsets.size() - 1;
  for (size_t i = 0; i < count; ++i) {
    if (r.offsets[i + 1] < r.offsets[i] || r.offsets[i + 1] - r.offsets[i] < 2)
      throw CoreError("ERR_INPUT", "encode: text " + std::to_string(i) + " has fewer than 2 tokens (<s> and </s>).");
  }
  if (r.order.size() != count) throw CoreError("ERR_INPUT", "encode: the batch order must list every text once.");
  std::vector<char> seen(count, 0);
  for (uint32_t i : r.order) {
    if (i >= count || seen[i]) throw CoreError("ERR_INPUT", "encode: the batch order must be a permutation.");
    seen[i] = 1;
  }
  uint32_t prev = 0;
  for (uint32_t end : r.batch_ends) {
    if (end <= prev || end > count) throw CoreError("ERR_INPUT", "encode: batch ends must increase up to the text count.");
    prev = end;
  }
  if (count > 0 && prev != count) throw CoreError("ERR_INPUT", "encode: batch ends must cover every text.");
}

void PackBatch(const EncodeRequest& request, uint32_t begin, uint32_t end, PaddedBatch* out) {
  out->begin = begin;
  out->batch = end - begin;
  out->len = 0;
  for (uint32_t j = begin; j < end; ++j) out->len = std::max(out->len, request.length(request.order[j]));
  const int64_t len = out->len;
  out->ids.assign(static_cast<size_t>(out->batch * len), 1);  // <pad> = 1
  out->mask.assign(static_cast<size_t>(out->batch * len), 0);
  for (int64_t b = 0; b < out->batch; ++b) {
    const uint32_t text = out->text(request, b);
    const int32_t* src = request.text_ids(text);
    for (int64_t t = 0; t < request.length(text); ++t) {
      out->ids[b * len + t] = src[t];
      out->mask[b * len + t] = 1;
    }
  }
}

}  // namespace m3
