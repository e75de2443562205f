// Finding the files of a BGE-M3 model directory (both layouts: docs/semantics.md, "Model files
// as users find them").
#pragma once
#include <string>
#include <vector>

namespace m3 {

/// Paths found in a model directory. Which layout it is follows from the graph's outputs, once
/// the session is open (see EncoderSession).
struct ModelFiles {
  std::string dir;
  std::string onnx;          // the graph
  std::string colbert_head;  // colbert_linear.{pt,safetensors}, empty when absent
  std::string sparse_head;   // sparse_linear.{pt,safetensors}, empty when absent
};

/// Looks for the graph (`onnx_file` when given, relative to dir, else onnx/model.onnx, then
/// model.onnx) and the head files. Throws CoreError(ERR_MODEL_FILES) naming what is missing and
/// listing what the directory holds.
ModelFiles FindModelFiles(const std::string& dir, const std::string& onnx_file);

/// A short listing of a directory (and its onnx/ subfolder) for error messages.
std::string DescribeDirectory(const std::string& dir);

bool FileExists(const std::string& path);

}  // namespace m3
