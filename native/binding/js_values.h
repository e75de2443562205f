// Conversions between JS values and core types, shared by the *_wrap files.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

namespace m3js {

/// A JS Error carrying a stable `code` (the TypeScript layer turns it into an M3Error).
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);

/// Copies a typed array of the expected element type into a vector; throws ERR_INPUT otherwise.
template <typename T>
std::vector<T> CopyTypedArray(const Napi::Value& value, napi_typedarray_type type, const char* what) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw MakeError(value.Env(), "ERR_INPUT", std::string("Expected a typed array for ") + what);
  }
  auto array = value.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(array.Data(), array.Data() + array.ElementLength());
}

/// Moves a vector into a JS typed array without copying (an external ArrayBuffer whose finalizer
/// frees the vector), or copies where the runtime forbids external buffers.
template <typename T>
Napi::TypedArrayOf<T> ToTypedArray(Napi::Env env, std::vector<T>&& data) {
  const size_t length = data.size();
  if (length == 0) return Napi::TypedArrayOf<T>::New(env, 0);
  auto* owned = new std::vector<T>(std::move(data));
  Napi::ArrayBuffer buffer;
  try {
    buffer = Napi::ArrayBuffer::New(env, owned->data(), length * sizeof(T),
                                    [](Napi::Env, void*, std::vector<T>* v) { delete v; }, owned);
  } catch (const Napi::Error&) {
    buffer = Napi::ArrayBuffer::New(env, length * sizeof(T));
    std::copy(owned->begin(), owned->end(), static_cast<T*>(buffer.Data()));
    delete owned;
  }
  return Napi::TypedArrayOf<T>::New(env, length, buffer, 0);
}

}  // namespace m3js
