#include "core/model_files.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>

#include "base/error.h"

namespace m3 {
namespace {

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListDirectory(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      if (IsDirectory(dir + "/" + name)) name += "/";
      names.push_back(name);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string FirstExisting(const std::string& dir, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const std::string path = dir + "/" + name;
    if (FileExists(path)) return path;
  }
  return "";
}

}  // namespace

bool FileExists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string DescribeDirectory(const std::string& dir) {
  auto join = [](const std::vector<std::string>& names) {
    std::string s;
    const size_t shown = std::min<size_t>(names.size(), 20);
    for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > shown) s += ", ... (" + std::to_string(names.size() - shown) + " more)";
    return names.empty() ? std::string("nothing") : s;
  };
  std::string out = "[" + join(ListDirectory(dir)) + "]";
  if (IsDirectory(dir + "/onnx")) out += ", onnx/: [" + join(ListDirectory(dir + "/onnx")) + "]";
  return out;
}

ModelFiles FindModelFiles(const std::string& dir, const std::string& onnx_file) {
  if (!IsDirectory(dir)) {
    throw CoreError("ERR_MODEL_FILES", "Model directory '" + dir +
                                           "' does not exist or is not a directory. Pass the folder "
                                           "of a BAAI/bge-m3 snapshot or of an ONNX export.");
  }
  ModelFiles files;
  files.dir = dir;
  if (!onnx_file.empty()) {
    files.onnx = onnx_file[0] == '/' ? onnx_file : dir + "/" + onnx_file;
    if (!FileExists(files.onnx)) {
      throw CoreError("ERR_MODEL_FILES", "ONNX file '" + files.onnx + "' (option onnxFile) not found. '" +
                                             dir + "' holds: " + DescribeDirectory(dir));
    }
  } else {
    files.onnx = FirstExisting(dir, {"onnx/model.onnx", "model.onnx"});
    if (files.onnx.empty()) {
      throw CoreError("ERR_MODEL_FILES",
                      "No ONNX graph in '" + dir + "': looked for onnx/model.onnx and model.onnx, found " +
                          DescribeDirectory(dir) +
                          ". Download the BAAI/bge-m3 snapshot (it has onnx/model.onnx) or pass "
                          "onnxFile for an export with another name.");
    }
  }
  files.colbert_head = FirstExisting(dir, {"colbert_linear.pt", "colbert_linear.safetensors"});
  files.sparse_head = FirstExisting(dir, {"sparse_linear.pt", "sparse_linear.safetensors"});
  return files;
}

}  // namespace m3
