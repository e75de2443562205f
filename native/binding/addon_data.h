// Per-environment state of the addon (one per main thread or worker thread).
#pragma once
#include <napi.h>

#include <set>

namespace m3js {

struct ModelState;

struct AddonData {
  Napi::FunctionReference encoder_constructor;
  std::set<ModelState*> live_models;  // not yet disposed; shut down when the environment exits
};

}  // namespace m3js
