#include "common/dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/file_util.h"
#include "common/idx_format.h"
#include "common/text.h"

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
  if (p[2] != idx::kTypeUnsignedByte && p[2] != idx::kTypeFloat) {
    char buf[96];
    std::snprintf(buf, sizeof(buf),
                  "unsupported IDX element type 0x%02x (0x08 unsigned byte or 0x0D float32)", p[2]);
    return Status::Corruption(name, buf);
  }
  const size_t element_bytes = p[2] == idx::kTypeFloat ? 4 : 1;
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
  const uint64_t expected = header + elements * element_bytes;
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
  if (element_bytes == 1) {
    out.data.assign(bytes.begin() + header, bytes.end());
    return out;
  }
  out.floats = true;
  out.values.resize(elements);
  for (uint64_t i = 0; i < elements; ++i) {
    const uint32_t bits = ReadBigEndian32(p + header + 4 * i);
    std::memcpy(&out.values[i], &bits, 4);
    if (!std::isfinite(out.values[i])) {
      return Status::Corruption(name, "value " + std::to_string(i) + " is not finite");
    }
  }
  return out;
}

Result<IdxArray> ReadIdxFile(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseIdx(path, *bytes);
}

Result<Dataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path) {
  auto images = ReadIdxFile(images_path);
  if (!images.ok()) return images.status();
  auto labels = ReadIdxFile(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->dims.size() < 2) {
    return Status::Corruption(images_path,
                              "expected samples of at least 2 dimensions (N x F, N x H x W or "
                              "N x C x H x W), found " +
                                  std::to_string(images->dims.size()));
  }
  if (labels->dims.size() != 1 || labels->floats) {
    return Status::Corruption(labels_path,
                              "expected 1 dimension of unsigned bytes (count), found " +
                                  std::to_string(labels->dims.size()) +
                                  (labels->floats ? " of floats" : ""));
  }
  if (images->dims[0] != labels->dims[0]) {
    return Status::Corruption(labels_path, "holds " + std::to_string(labels->dims[0]) +
                                               " labels but " + images_path + " holds " +
                                               std::to_string(images->dims[0]) + " samples");
  }
  for (size_t i = 0; i < images->dims.size(); ++i) {
    if (images->dims[i] == 0) {
      return Status::Corruption(images_path, "dimension " + std::to_string(i) +
                                                 " is 0: a data set needs samples with values");
    }
  }
  Dataset ds;
  ds.count = images->dims[0];
  // N x H x W images have one channel.
  if (images->dims.size() == 3) ds.shape.push_back(1);
  for (size_t i = 1; i < images->dims.size(); ++i) ds.shape.push_back(images->dims[i]);
  for (uint8_t l : labels->data) ds.num_classes = std::max(ds.num_classes, l + 1);
  ds.floats = images->floats;
  ds.pixels = std::move(images->data);
  ds.features = std::move(images->values);
  ds.labels = std::move(labels->data);
  return ds;
}

namespace {

// The images and labels files of `split` in `dir` (the first spelling that
// exists, the canonical one when none does).
std::pair<std::string, std::string> IdxSplitFiles(const std::string& dir, Split split) {
  std::vector<std::string> images, labels;
  for (const std::string& prefix : split == Split::kTrain
                                       ? std::vector<std::string>{"train"}
                                       : std::vector<std::string>{"t10k", "test"}) {
    for (const std::string sep : {"-", "."}) {
      for (const std::string idx : {"idx1", "idx2", "idx3", "idx4"}) {
        images.push_back(prefix + "-images" + sep + idx + "-ubyte");
      }
      labels.push_back(prefix + "-labels" + sep + "idx1-ubyte");
    }
  }
  // The canonical names first in each list, for the error message.
  std::swap(images[0], images[2]);
  return {FindFile(dir, images), FindFile(dir, labels)};
}

}  // namespace

bool HasIdxSplit(const std::string& dir, Split split) {
  auto [images, labels] = IdxSplitFiles(dir, split);
  return FileExists(images) && FileExists(labels);
}

Result<Dataset> LoadMnistFolder(const std::string& dir, Split split) {
  auto [images, labels] = IdxSplitFiles(dir, split);
  if (!FileExists(images) || !FileExists(labels)) {
    return Status::NotFound(
        dir, "missing " + std::string(FileExists(images) ? labels : images) +
                 " (an IDX dataset folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; run scripts/setup.sh to "
                 "fetch MNIST)");
  }
  return LoadIdxPair(images, labels);
}

int64_t Dataset::SampleSize() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Dataset::ShapeString() const {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "x" : "") + std::to_string(shape[i]);
  return out.empty() ? "(none)" : out;
}

std::string Normalization::ToString() const {
  // Each value in the fewest digits that read back as the same float.
  auto text = [](float v) {
    char buf[32];
    for (int digits = 6; digits <= 9; ++digits) {
      std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
      if (std::strtof(buf, nullptr) == v) break;
    }
    return std::string(buf);
  };
  std::string out;
  for (size_t c = 0; c < mean.size(); ++c) {
    out += (c ? "," : "") + text(mean[c]) + "," + text(std[c]);
  }
  return out;
}

Result<Normalization> ParseNormalization(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("--normalize '" + text + "'",
                                   why + " (expected mean,std[,mean,std...], std > 0)");
  };
  std::vector<float> values;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string field = text.substr(pos, comma - pos);
    char* end = nullptr;
    const double v = std::strtod(field.c_str(), &end);
    if (field.empty() || end != field.c_str() + field.size() ||
        !std::isfinite(static_cast<float>(v))) {
      return bad("'" + field + "' is not a finite float");
    }
    values.push_back(static_cast<float>(v));
    pos = comma + 1;
  }
  if (values.size() % 2 != 0) return bad("an odd count of numbers");
  Normalization n;
  for (size_t i = 0; i < values.size(); i += 2) {
    if (!(values[i + 1] > 0)) return bad("std " + std::to_string(values[i + 1]) + " is not > 0");
    n.mean.push_back(values[i]);
    n.std.push_back(values[i + 1]);
  }
  return n;
}

Status CheckNormalization(const Dataset& data, const Normalization& n, const std::string& what) {
  if (n.empty() || n.mean.size() == 1) return Status::OK();
  const int64_t channels = data.shape.empty() ? 0 : data.shape[0];
  if (static_cast<int64_t>(n.mean.size()) != channels) {
    return Status::InvalidArgument(
        what, "gives " + std::to_string(n.mean.size()) + " mean/std pairs; samples of shape " +
                  data.ShapeString() + " have " + std::to_string(channels) +
                  " channels (axis 0): give one pair or one per channel");
  }
  return Status::OK();
}

Status UseClassNames(Dataset* data, const std::vector<std::string>& classes,
                     const std::string& what) {
  if (data->class_names.empty() || data->class_names == classes) return Status::OK();
  if (classes.size() > 256) {  // labels are bytes
    return Status::InvalidArgument(what, "would need " + std::to_string(classes.size()) +
                                             " classes; at most 256 are supported");
  }
  std::vector<uint8_t> to(data->class_names.size());
  for (size_t i = 0; i < data->class_names.size(); ++i) {
    const auto it = std::find(classes.begin(), classes.end(), data->class_names[i]);
    if (it == classes.end()) {
      std::string list;
      for (size_t k = 0; k < classes.size() && k < 20; ++k) {
        list += (k ? ", " : "") + Printable(classes[k]);
      }
      if (classes.size() > 20) list += ", ...";
      return Status::InvalidArgument(what, "has class '" + data->class_names[i] +
                                               "', which is not one of the federation's (" + list +
                                               ")");
    }
    to[i] = static_cast<uint8_t>(it - classes.begin());
  }
  for (uint8_t& label : data->labels) label = to[label];
  data->class_names = classes;
  data->num_classes = static_cast<int>(classes.size());
  return Status::OK();
}

Normalization ComputeNormalization(const Dataset& data) {
  const int64_t channels = data.shape.empty() ? 1 : data.shape[0];
  const int64_t per_channel = channels ? data.SampleSize() / channels : 0;
  std::vector<double> sum(channels, 0.0), sq(channels, 0.0);
  for (int64_t i = 0; i < data.count; ++i) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * per_channel;
      double s = 0, q = 0;
      for (int64_t k = 0; k < per_channel; ++k) {
        const double x = data.floats ? data.features[base + k] : data.pixels[base + k] / 255.0;
        s += x;
        q += x * x;
      }
      sum[c] += s;
      sq[c] += q;
    }
  }
  Normalization n;
  const double count = static_cast<double>(data.count) * per_channel;
  for (int64_t c = 0; c < channels; ++c) {
    const double mean = count > 0 ? sum[c] / count : 0.0;
    const double var = count > 0 ? std::max(0.0, sq[c] / count - mean * mean) : 0.0;
    const double sd = std::sqrt(var);
    n.mean.push_back(static_cast<float>(mean));
    n.std.push_back(sd > 1e-8 ? static_cast<float>(sd) : 1.0f);
  }
  return n;
}

Result<Dataset> SelectSamples(const Dataset& data, const std::vector<int64_t>& indices) {
  const size_t sample = static_cast<size_t>(data.SampleSize());
  Dataset out;
  out.count = static_cast<int64_t>(indices.size());
  out.shape = data.shape;
  out.num_classes = data.num_classes;
  out.class_names = data.class_names;
  out.floats = data.floats;
  out.group_names = data.group_names;
  out.normalization = data.normalization;
  (data.floats ? out.features.resize(indices.size() * sample)
               : out.pixels.resize(indices.size() * sample));
  out.labels.resize(indices.size());
  if (!data.groups.empty()) out.groups.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= data.count) {
      return Status::InvalidArgument("sample index " + std::to_string(i) +
                                     " out of range for a dataset of " +
                                     std::to_string(data.count));
    }
    if (data.floats) {
      std::memcpy(&out.features[k * sample], &data.features[i * sample], sample * sizeof(float));
    } else {
      std::memcpy(&out.pixels[k * sample], &data.pixels[i * sample], sample);
    }
    out.labels[k] = data.labels[i];
    if (!data.groups.empty()) out.groups[k] = data.groups[i];
  }
  return out;
}

namespace {

// An IDX file with the given dimensions: `n` unsigned bytes, or `n` floats
// (big-endian float32) when `floats` is set.
std::string EncodeIdx(const std::vector<uint32_t>& dims, const uint8_t* bytes, const float* floats,
                      size_t n) {
  std::string out;
  out.reserve(idx::kMagicBytes + idx::kDimBytes * dims.size() + n * (floats ? 4 : 1));
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(floats ? idx::kTypeFloat : idx::kTypeUnsignedByte));
  out.push_back(static_cast<char>(dims.size()));
  auto put32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
  };
  for (uint32_t d : dims) put32(d);
  if (!floats) {
    out.append(reinterpret_cast<const char*>(bytes), n);
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &floats[i], 4);
    put32(bits);
  }
  return out;
}

}  // namespace

Status WriteMnistFolder(const std::string& dir, Split split, const Dataset& data) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  FL_RETURN_IF_ERROR(CreateDirectories(dir));
  const auto n = static_cast<uint32_t>(data.count);
  std::vector<uint32_t> dims{n};
  // One-channel images keep MNIST's N x H x W layout.
  const bool drop_channel = data.shape.size() == 3 && data.shape[0] == 1;
  for (size_t i = drop_channel ? 1 : 0; i < data.shape.size(); ++i) {
    dims.push_back(static_cast<uint32_t>(data.shape[i]));
  }
  const std::string idx_name = "idx" + std::to_string(dims.size());
  const size_t values = static_cast<size_t>(data.count * data.SampleSize());
  FL_RETURN_IF_ERROR(WriteFileAtomic(
      dir + "/" + prefix + "-images-" + idx_name + "-ubyte",
      EncodeIdx(dims, data.pixels.data(), data.floats ? data.features.data() : nullptr, values)));
  return WriteFileAtomic(dir + "/" + prefix + "-labels-idx1-ubyte",
                         EncodeIdx({n}, data.labels.data(), nullptr, data.labels.size()));
}

}  // namespace fl
