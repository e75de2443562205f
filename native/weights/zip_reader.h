// A minimal, defensive reader for the zip archives torch.save() writes: it indexes the central
// directory (ZIP64 included) and hands out stored (uncompressed) entries as views into memory.
// Every offset and length comes from an untrusted file, so each is checked against the archive
// size before use; a corrupted archive raises CoreError instead of reading out of bounds.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace m3 {

/// One file inside the archive, as described by the central directory.
struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0 = stored; anything else is refused when the entry is read
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
};

/// A borrowed, read-only byte range inside the archive's memory; valid while the archive lives.
struct ByteView {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class ZipArchive {
 public:
  /// Indexes the central directory of the archive held in `bytes` (taken by value so the
  /// archive owns its memory). `source_name` names the file in error messages. Throws
  /// CoreError("ERR_MODEL_FILES") when no valid end-of-central-directory record is found, the
  /// archive spans several disks, or any directory record is truncated or out of bounds.
  ZipArchive(std::vector<uint8_t> bytes, std::string source_name);

  /// Reads the file at `path` into memory and indexes it (see the constructor).
  static ZipArchive Open(const std::string& path);

  /// All entries in central-directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }

  /// The entry named exactly `name`, or nullptr.
  const ZipEntry* Find(const std::string& name) const;

  /// The bytes of a stored entry, after checking its local header, bounds and CRC-32. Throws
  /// CoreError("ERR_MODEL_FILES") for compressed or encrypted entries (torch.save never writes
  /// them, so such an archive was repacked by another tool) and for any corruption.
  ByteView ReadStored(const ZipEntry& entry) const;

  /// Total archive size in bytes, the bound every size read from the archive is checked against.
  uint64_t size() const { return bytes_.size(); }

  /// The name used for this archive in error messages.
  const std::string& source_name() const { return source_name_; }

 private:
  struct DirectoryLocation {
    uint64_t entry_count = 0;
    uint64_t size = 0;
    uint64_t offset = 0;
  };

  DirectoryLocation LocateCentralDirectory() const;
  void ReadCentralDirectory(const DirectoryLocation& location);
  [[noreturn]] void Fail(const std::string& what) const;

  std::vector<uint8_t> bytes_;
  std::string source_name_;
  std::vector<ZipEntry> entries_;
};

/// CRC-32 (the zip/IEEE 802.3 polynomial) of `size` bytes at `data`.
uint32_t Crc32(const uint8_t* data, uint64_t size);

}  // namespace m3
