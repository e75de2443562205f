// What the fuzz targets share: the line between a clean rejection and a finding. The readers
// refuse bad input by throwing CoreError with a known code; any other exception, a CoreError
// with an unexpected code or a broken invariant is a finding, reported on stderr and turned
// into abort() so that either engine (libFuzzer or standalone_driver.cc) saves the input.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "base/error.h"
#include "weights/tensor_file.h"

namespace m3::fuzz {

[[noreturn]] inline void Finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Fails the case unless `condition` holds: invariants a loaded result must keep.
inline void Require(bool condition, const std::string& what) {
  if (!condition) Finding("broken invariant: " + what);
}

/// What tensor_file.h promises of every loaded tensor: non-negative dimensions whose product
/// is the number of values.
inline void CheckStateDict(const StateDict& tensors) {
  for (const auto& [name, tensor] : tensors) {
    uint64_t elements = 1;
    for (int64_t dimension : tensor.shape) {
      Require(dimension >= 0, "tensor '" + name + "' has a negative dimension");
      Require(!__builtin_mul_overflow(elements, static_cast<uint64_t>(dimension), &elements),
              "tensor '" + name + "' has a shape whose element count overflows");
    }
    Require(tensor.data.size() == elements, "tensor '" + name + "' has " + std::to_string(tensor.data.size()) +
                                                " values for " + std::to_string(elements) + " elements");
  }
}

/// Runs one case. A CoreError whose code is `accepted_code` ends it as a clean rejection.
template <typename Body>
int RunCase(const char* accepted_code, Body&& body) {
  try {
    body();
  } catch (const CoreError& error) {
    if (error.code() != accepted_code) {
      Finding("CoreError with code " + error.code() + " (expected " + accepted_code + "): " + error.what());
    }
  } catch (const std::exception& error) {
    Finding(std::string("exception other than CoreError: ") + error.what());
  } catch (...) {
    Finding("exception of an unknown type");
  }
  return 0;
}

}  // namespace m3::fuzz
