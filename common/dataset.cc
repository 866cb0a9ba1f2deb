#include "common/dataset.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/file_util.h"
#include "common/idx_format.h"

namespace fl {
namespace {

uint32_t ReadBigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Returns the first of the candidate names that exists in `dir`, or the first
// name when none does (so the error mentions the canonical name).
std::string FindFile(const std::string& dir, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (FileExists(dir + "/" + n)) return dir + "/" + n;
  }
  return dir + "/" + names.front();
}

}  // namespace

Result<IdxArray> ParseIdx(const std::string& name, const std::string& bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t size = bytes.size();
  if (size < idx::kMagicBytes) {
    return Status::Corruption(
        name, "truncated: " + std::to_string(size) + " bytes, too short for the 4-byte IDX magic");
  }
  if (p[0] != 0 || p[1] != 0) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "bad magic %02x %02x %02x %02x (expected 00 00 08 0N)", p[0],
                  p[1], p[2], p[3]);
    return Status::Corruption(name, std::string(buf) + "; not an IDX file");
  }
  if (p[2] != idx::kTypeUnsignedByte) {
    char buf[80];
    std::snprintf(buf, sizeof(buf),
                  "unsupported IDX element type 0x%02x (only 0x08, unsigned byte)", p[2]);
    return Status::Corruption(name, buf);
  }
  const uint8_t ndims = p[3];
  if (ndims == 0 || ndims > idx::kMaxDims) {
    return Status::Corruption(name, "bad dimension count " + std::to_string(ndims) +
                                        " in magic (expected 1.." + std::to_string(idx::kMaxDims) +
                                        ")");
  }
  const size_t header = idx::kMagicBytes + idx::kDimBytes * ndims;
  if (size < header) {
    return Status::Corruption(name, "truncated header: " + std::to_string(size) +
                                        " bytes, header needs " + std::to_string(header));
  }
  IdxArray out;
  // Multiply in 64 bits and stop as soon as the product exceeds the file, so a
  // hostile header cannot make us allocate or overflow.
  uint64_t elements = 1;
  for (uint8_t i = 0; i < ndims; ++i) {
    const uint32_t d = ReadBigEndian32(p + idx::kMagicBytes + idx::kDimBytes * i);
    out.dims.push_back(d);
    elements *= d;
    if (elements > size) elements = size + 1;  // saturate; reported below
  }
  const uint64_t expected = header + elements;
  if (size < expected) {
    std::ostringstream os;
    os << "truncated: header declares dims [";
    for (size_t i = 0; i < out.dims.size(); ++i) os << (i ? "x" : "") << out.dims[i];
    os << "] needing "
       << (elements > size ? std::string("more than ") + std::to_string(size)
                           : std::to_string(expected))
       << " bytes, file has " << size;
    return Status::Corruption(name, os.str());
  }
  if (size > expected) {
    return Status::Corruption(
        name, std::to_string(size - expected) + " trailing bytes after the declared data");
  }
  out.data.assign(bytes.begin() + header, bytes.end());
  return out;
}

Result<IdxArray> ReadIdxFile(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseIdx(path, *bytes);
}

Result<ImageDataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path,
                                 int num_classes) {
  auto images = ReadIdxFile(images_path);
  if (!images.ok()) return images.status();
  auto labels = ReadIdxFile(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->dims.size() != 3) {
    return Status::Corruption(images_path, "expected 3 dimensions (count, rows, cols), found " +
                                               std::to_string(images->dims.size()));
  }
  if (labels->dims.size() != 1) {
    return Status::Corruption(
        labels_path, "expected 1 dimension (count), found " + std::to_string(labels->dims.size()));
  }
  if (images->dims[0] != labels->dims[0]) {
    return Status::Corruption(labels_path, "holds " + std::to_string(labels->dims[0]) +
                                               " labels but " + images_path + " holds " +
                                               std::to_string(images->dims[0]) + " images");
  }
  for (size_t i = 0; i < labels->data.size(); ++i) {
    if (labels->data[i] >= num_classes) {
      return Status::Corruption(labels_path, "label " + std::to_string(labels->data[i]) +
                                                 " at index " + std::to_string(i) +
                                                 " is out of range [0, " +
                                                 std::to_string(num_classes) + ")");
    }
  }
  ImageDataset ds;
  ds.count = images->dims[0];
  ds.rows = static_cast<int>(images->dims[1]);
  ds.cols = static_cast<int>(images->dims[2]);
  ds.num_classes = num_classes;
  ds.pixels = std::move(images->data);
  ds.labels = std::move(labels->data);
  return ds;
}

Result<ImageDataset> LoadMnistFolder(const std::string& dir, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string images =
      FindFile(dir, {prefix + "-images-idx3-ubyte", prefix + "-images.idx3-ubyte"});
  const std::string labels =
      FindFile(dir, {prefix + "-labels-idx1-ubyte", prefix + "-labels.idx1-ubyte"});
  if (!FileExists(images) || !FileExists(labels)) {
    return Status::NotFound(
        dir, "missing " + std::string(FileExists(images) ? labels : images) +
                 " (a dataset folder needs train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; run scripts/setup.sh to "
                 "fetch MNIST)");
  }
  auto ds = LoadIdxPair(images, labels, /*num_classes=*/10);
  if (!ds.ok()) return ds.status();
  if (ds->rows != 28 || ds->cols != 28) {
    return Status::InvalidArgument(images, "images are " + std::to_string(ds->rows) + "x" +
                                               std::to_string(ds->cols) +
                                               "; the model zoo expects 28x28");
  }
  return ds;
}

Result<ImageDataset> SelectSamples(const ImageDataset& data, const std::vector<int64_t>& indices) {
  const size_t image_bytes = static_cast<size_t>(data.rows) * data.cols;
  ImageDataset out;
  out.count = static_cast<int64_t>(indices.size());
  out.rows = data.rows;
  out.cols = data.cols;
  out.num_classes = data.num_classes;
  out.pixels.resize(indices.size() * image_bytes);
  out.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= data.count) {
      return Status::InvalidArgument("sample index " + std::to_string(i) +
                                     " out of range for a dataset of " +
                                     std::to_string(data.count));
    }
    std::memcpy(&out.pixels[k * image_bytes], &data.pixels[i * image_bytes], image_bytes);
    out.labels[k] = data.labels[i];
  }
  return out;
}

namespace {

// An IDX file of unsigned bytes with the given dimensions.
std::string EncodeIdx(const std::vector<uint32_t>& dims, const uint8_t* data, size_t n) {
  std::string out;
  out.reserve(idx::kMagicBytes + idx::kDimBytes * dims.size() + n);
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(idx::kTypeUnsignedByte));
  out.push_back(static_cast<char>(dims.size()));
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(d >> shift));
  }
  out.append(reinterpret_cast<const char*>(data), n);
  return out;
}

}  // namespace

Status WriteMnistFolder(const std::string& dir, Split split, const ImageDataset& data) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  FL_RETURN_IF_ERROR(CreateDirectories(dir));
  const auto n = static_cast<uint32_t>(data.count);
  FL_RETURN_IF_ERROR(WriteFileAtomic(
      dir + "/" + prefix + "-images-idx3-ubyte",
      EncodeIdx({n, static_cast<uint32_t>(data.rows), static_cast<uint32_t>(data.cols)},
                data.pixels.data(), data.pixels.size())));
  return WriteFileAtomic(dir + "/" + prefix + "-labels-idx1-ubyte",
                         EncodeIdx({n}, data.labels.data(), data.labels.size()));
}

}  // namespace fl
