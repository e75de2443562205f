// Facts read from an encoder graph itself, for model folders that lack the config.json that
// would state them.
#pragma once
#include <cstdint>
#include <string>

namespace m3 {

/// Rows of the position-embedding table: the initializer [rows, hidden] that a Gather reads at
/// position ids computed from the input (XLM-R: a CumSum over the non-padding mask). 0 when the
/// graph cannot be parsed or holds no such table.
int64_t PositionTableRows(const std::string& model_bytes);

}  // namespace m3
