// Zip central-directory reader for torch.save() archives. Layout follows PKWARE's APPNOTE:
// end-of-central-directory (EOCD) record at the tail, optional ZIP64 locator and record just
// before it, central directory entries, and a local header in front of each entry's data.
#include "weights/zip_reader.h"

#include <array>
#include <cstring>
#include <utility>

#include "base/error.h"
#include "weights/tensor_file.h"

namespace m3 {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndOfDirectorySignature = 0x06054b50;
constexpr uint32_t kZip64EndOfDirectorySignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint64_t kEndOfDirectorySize = 22;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kZip64EndOfDirectorySize = 56;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kMaxCommentSize = 0xFFFF;
constexpr uint16_t kZip64ExtraFieldId = 0x0001;
constexpr uint16_t kEncryptedFlag = 0x0001;

const char* MethodName(uint16_t method) {
  switch (method) {
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstd";
    case 95:
      return "xz";
    default:
      return "unknown";
  }
}

}  // namespace

uint32_t Crc32(const uint8_t* data, uint64_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> entries{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t crc = i;
      for (int bit = 0; bit < 8; ++bit) crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
      entries[i] = crc;
    }
    return entries;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (uint64_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

namespace {

// Bounds-checked little-endian field access over the archive bytes. Every read goes through
// Has(), so a field straddling the end of the file is reported instead of read.
class FieldReader {
 public:
  explicit FieldReader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}

  bool Has(uint64_t offset, uint64_t length) const {
    return offset <= bytes_.size() && length <= bytes_.size() - offset;
  }
  uint64_t Read(uint64_t offset, int width) const {
    uint64_t value = 0;
    for (int i = width; i-- > 0;) value = (value << 8) | bytes_[offset + i];
    return value;
  }
  uint16_t U16(uint64_t offset) const { return static_cast<uint16_t>(Read(offset, 2)); }
  uint32_t U32(uint64_t offset) const { return static_cast<uint32_t>(Read(offset, 4)); }
  uint64_t U64(uint64_t offset) const { return Read(offset, 8); }

 private:
  const std::vector<uint8_t>& bytes_;
};

}  // namespace

ZipArchive::ZipArchive(std::vector<uint8_t> bytes, std::string source_name)
    : bytes_(std::move(bytes)), source_name_(std::move(source_name)) {
  ReadCentralDirectory(LocateCentralDirectory());
}

ZipArchive ZipArchive::Open(const std::string& path) {
  return ZipArchive(weights::ReadFileBytes(path), path);
}

void ZipArchive::Fail(const std::string& what) const {
  throw CoreError("ERR_MODEL_FILES", source_name_ + ": " + what);
}

ZipArchive::DirectoryLocation ZipArchive::LocateCentralDirectory() const {
  const FieldReader in(bytes_);
  const uint64_t size = bytes_.size();
  if (size < kEndOfDirectorySize) {
    Fail("is too short to be a zip archive (" + std::to_string(size) +
         " bytes); the file is truncated, download it again");
  }
  // The EOCD record ends the file, followed only by its own comment; require the comment
  // length to reach exactly the end so a signature inside data is not mistaken for it.
  uint64_t eocd = 0;
  bool found = false;
  const uint64_t last = size - kEndOfDirectorySize;
  const uint64_t first = last > kMaxCommentSize ? last - kMaxCommentSize : 0;
  for (uint64_t pos = last + 1; pos-- > first;) {
    if (in.U32(pos) == kEndOfDirectorySignature &&
        pos + kEndOfDirectorySize + in.U16(pos + 20) == size) {
      eocd = pos;
      found = true;
      break;
    }
  }
  if (!found) {
    Fail("has no zip end-of-central-directory record; the file is truncated or corrupted, "
         "download it again");
  }
  uint64_t disk = in.U16(eocd + 4);
  uint64_t directory_disk = in.U16(eocd + 6);
  uint64_t entries_on_disk = in.U16(eocd + 8);
  DirectoryLocation location;
  location.entry_count = in.U16(eocd + 10);
  location.size = in.U32(eocd + 12);
  location.offset = in.U32(eocd + 16);
  uint64_t disk_count = 1;

  const bool has_zip64_locator =
      eocd >= kZip64LocatorSize && in.U32(eocd - kZip64LocatorSize) == kZip64LocatorSignature;
  if (has_zip64_locator) {
    const uint64_t locator = eocd - kZip64LocatorSize;
    const uint64_t record = in.U64(locator + 8);
    disk_count = in.U32(locator + 16);
    if (!in.Has(record, kZip64EndOfDirectorySize) ||
        in.U32(record) != kZip64EndOfDirectorySignature) {
      Fail("has a ZIP64 locator that points outside the file or at no ZIP64 record; the archive "
           "is corrupted, download it again");
    }
    disk = in.U32(record + 16);
    directory_disk = in.U32(record + 20);
    entries_on_disk = in.U64(record + 24);
    location.entry_count = in.U64(record + 32);
    location.size = in.U64(record + 40);
    location.offset = in.U64(record + 48);
  } else if (location.entry_count == 0xFFFF || location.size == 0xFFFFFFFFu ||
             location.offset == 0xFFFFFFFFu) {
    Fail("declares ZIP64 sizes but has no ZIP64 end-of-central-directory locator; the archive "
         "is corrupted, download it again");
  }
  if (disk != 0 || directory_disk != 0 || entries_on_disk != location.entry_count ||
      disk_count > 1) {
    Fail("is a multi-part (spanned) zip archive, which is not supported; re-save it with "
         "torch.save as one file");
  }
  if (!in.Has(location.offset, location.size)) {
    Fail("has a central directory outside the file (offset " + std::to_string(location.offset) +
         ", size " + std::to_string(location.size) + ", file size " + std::to_string(size) +
         "); the file is truncated or corrupted, download it again");
  }
  if (location.entry_count > location.size / kCentralHeaderSize) {
    Fail("declares " + std::to_string(location.entry_count) +
         " entries, more than its central directory can hold; the archive is corrupted");
  }
  return location;
}

void ZipArchive::ReadCentralDirectory(const DirectoryLocation& location) {
  const FieldReader in(bytes_);
  const uint64_t end = location.offset + location.size;
  uint64_t pos = location.offset;
  entries_.reserve(static_cast<size_t>(location.entry_count));
  for (uint64_t index = 0; index < location.entry_count; ++index) {
    const std::string where = "central directory entry " + std::to_string(index);
    if (pos + kCentralHeaderSize > end || in.U32(pos) != kCentralHeaderSignature) {
      Fail(where + " is truncated or has a bad signature; the archive is corrupted");
    }
    ZipEntry entry;
    entry.flags = in.U16(pos + 8);
    entry.method = in.U16(pos + 10);
    entry.crc32 = in.U32(pos + 16);
    entry.compressed_size = in.U32(pos + 20);
    entry.uncompressed_size = in.U32(pos + 24);
    const uint64_t name_size = in.U16(pos + 28);
    const uint64_t extra_size = in.U16(pos + 30);
    const uint64_t comment_size = in.U16(pos + 32);
    uint64_t start_disk = in.U16(pos + 34);
    entry.local_header_offset = in.U32(pos + 42);
    const uint64_t name_pos = pos + kCentralHeaderSize;
    const uint64_t extra_pos = name_pos + name_size;
    const uint64_t next = extra_pos + extra_size + comment_size;
    if (next > end) {
      Fail(where + " runs past the end of the central directory; the archive is corrupted");
    }
    entry.name.assign(reinterpret_cast<const char*>(bytes_.data() + name_pos), name_size);

    // ZIP64 extra field: 64-bit values appear only for the fields saturated above, in order.
    bool saw_zip64_field = false;
    for (uint64_t field = extra_pos; field + 4 <= extra_pos + extra_size;) {
      const uint16_t id = in.U16(field);
      const uint64_t field_size = in.U16(field + 2);
      const uint64_t body = field + 4;
      if (body + field_size > extra_pos + extra_size) {
        Fail(where + " ('" + entry.name + "') has a truncated extra field; the archive is "
             "corrupted");
      }
      if (id == kZip64ExtraFieldId && !saw_zip64_field) {
        saw_zip64_field = true;
        uint64_t cursor = body;
        auto take = [&](uint64_t* value, int width) {
          if (cursor + width > body + field_size) {
            Fail(where + " ('" + entry.name + "') has a ZIP64 field too short for its sizes; "
                 "the archive is corrupted");
          }
          *value = in.Read(cursor, width);
          cursor += width;
        };
        if (entry.uncompressed_size == 0xFFFFFFFFu) take(&entry.uncompressed_size, 8);
        if (entry.compressed_size == 0xFFFFFFFFu) take(&entry.compressed_size, 8);
        if (entry.local_header_offset == 0xFFFFFFFFu) take(&entry.local_header_offset, 8);
        if (start_disk == 0xFFFF) take(&start_disk, 4);
      }
      field = body + field_size;
    }
    if (!saw_zip64_field && (entry.uncompressed_size == 0xFFFFFFFFu ||
                             entry.compressed_size == 0xFFFFFFFFu ||
                             entry.local_header_offset == 0xFFFFFFFFu || start_disk == 0xFFFF)) {
      Fail(where + " ('" + entry.name + "') declares ZIP64 sizes without a ZIP64 extra field; "
           "the archive is corrupted");
    }
    if (start_disk != 0) {
      Fail("entry '" + entry.name + "' lives on another disk of a multi-part archive, which is "
           "not supported; re-save the file with torch.save as one file");
    }
    entries_.push_back(std::move(entry));
    pos = next;
  }
}

const ZipEntry* ZipArchive::Find(const std::string& name) const {
  for (const ZipEntry& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

ByteView ZipArchive::ReadStored(const ZipEntry& entry) const {
  const FieldReader in(bytes_);
  const std::string quoted = "entry '" + entry.name + "'";
  if (entry.flags & kEncryptedFlag) {
    Fail(quoted + " is encrypted, which is not supported; save the weights again with torch.save");
  }
  if (entry.method != 0) {
    Fail(quoted + " is compressed (zip method " + std::to_string(entry.method) + ", " +
         MethodName(entry.method) + "), but only stored entries are supported: torch.save "
         "writes them uncompressed, so this archive was repacked by another tool. Re-save it "
         "with torch.save(torch.load(path, weights_only=True), path)");
  }
  if (entry.compressed_size != entry.uncompressed_size) {
    Fail(quoted + " is stored but its compressed and uncompressed sizes differ; the archive is "
         "corrupted, download it again");
  }
  const uint64_t header = entry.local_header_offset;
  if (!in.Has(header, kLocalHeaderSize) || in.U32(header) != kLocalHeaderSignature) {
    Fail(quoted + " has no valid local header at offset " + std::to_string(header) +
         "; the archive is truncated or corrupted, download it again");
  }
  const uint64_t name_size = in.U16(header + 26);
  const uint64_t extra_size = in.U16(header + 28);
  const uint64_t name_pos = header + kLocalHeaderSize;
  if (!in.Has(name_pos, name_size + extra_size) || name_size != entry.name.size() ||
      std::memcmp(bytes_.data() + name_pos, entry.name.data(), name_size) != 0) {
    Fail(quoted + " has a local header that disagrees with the central directory; the archive "
         "is corrupted, download it again");
  }
  const uint64_t data_pos = name_pos + name_size + extra_size;
  if (!in.Has(data_pos, entry.compressed_size)) {
    Fail(quoted + " (" + std::to_string(entry.compressed_size) + " bytes at offset " +
         std::to_string(data_pos) + ") extends past the end of the file (" +
         std::to_string(bytes_.size()) + " bytes); the file is truncated, download it again");
  }
  ByteView view{bytes_.data() + data_pos, entry.compressed_size};
  if (Crc32(view.data, view.size) != entry.crc32) {
    Fail(quoted + " fails its CRC-32 check; the file is corrupted, download it again");
  }
  return view;
}

}  // namespace m3
