// Labelled data sets in memory, and reading them from IDX files (MNIST format).
// Other formats (CSV, class folders of images) are in common/data_loader.h.
//
// Any folder holding the four MNIST-named IDX files works as a dataset folder,
// with samples of any shape (Fashion-MNIST, KMNIST, CIFAR as N x 3 x 32 x 32,
// sensor vectors as N x F):
//   train-images-idx3-ubyte  train-labels-idx1-ubyte
//   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte
// (the `train-images.idx3-ubyte` spelling with a dot is accepted too).
//
// Every error names the file and what is wrong with it: bad magic, truncated,
// trailing bytes, count mismatch between images and labels, label out of range.
#ifndef FEDGE_COMMON_DATASET_H_
#define FEDGE_COMMON_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

// The content of one IDX file of unsigned bytes or float32.
struct IdxArray {
  std::vector<uint32_t> dims;  // e.g. {60000, 28, 28}
  bool floats{false};          // element type 0x0D
  std::vector<uint8_t> data;   // product(dims) bytes, row-major (unsigned bytes)
  std::vector<float> values;   // product(dims) floats, row-major (float32)
};

// Parses an IDX file held in memory. `name` is used in error messages only.
// Validates magic, element type, dimension count, and that the length is exactly
// header + product(dims) (no truncation, no trailing bytes).
Result<IdxArray> ParseIdx(const std::string& name, const std::string& bytes);

// Reads and parses the IDX file at `path`.
Result<IdxArray> ReadIdxFile(const std::string& path);

// MNIST's training-set pixel statistics after scaling to [0, 1]. What
// `--normalize auto` computes on MNIST is within their 4-decimal rounding (5e-5) of these.
constexpr double kMnistPixelMean = 0.1307;
constexpr double kMnistPixelStd = 0.3081;

// Input normalisation: the model sees (x - mean[c]) / std[c], where x is a
// sample's value (byte samples scaled to [0, 1] first) and c its channel: axis
// 0 of a sample, so the colour channel of an image [C, H, W] and the feature of
// a vector [F]. One mean/std pair applies to every channel.
struct Normalization {
  std::vector<float> mean;
  std::vector<float> std;

  bool empty() const { return mean.empty(); }
  // "m,s[,m,s...]", the form --normalize takes.
  std::string ToString() const;
};

// MNIST's published statistics as a Normalization.
inline Normalization MnistNormalization() {
  return Normalization{{static_cast<float>(kMnistPixelMean)}, {static_cast<float>(kMnistPixelStd)}};
}

// Parses "m,s[,m,s...]" (std > 0, all finite). InvalidArgument naming the text
// otherwise.
Result<Normalization> ParseNormalization(const std::string& text);

// An in-memory labelled data set: `count` samples of shape `shape`, as bytes
// (IDX files, images; the model sees them scaled by 1/255) or as floats (CSV,
// float IDX; seen as they are), then normalised.
struct Dataset {
  int64_t count{0};
  std::vector<int64_t> shape;  // one sample: {C, H, W} or {F}
  int num_classes{0};          // labels are in [0, num_classes)
  // Class folder names or CSV text labels, by class index (empty: numeric).
  std::vector<std::string> class_names;
  bool floats{false};           // samples in `features`, else in `pixels`
  std::vector<uint8_t> pixels;  // count * SampleSize() bytes, row-major
  std::vector<float> features;  // count * SampleSize() floats, row-major
  std::vector<uint8_t> labels;  // count labels in [0, num_classes)
  // CSV with a group column (a natural device split): the group of each
  // sample, an index into group_names. Empty otherwise.
  std::vector<int32_t> groups;
  std::vector<std::string> group_names;
  // Applied by ToTensors and Evaluate. Empty: none (bytes still scaled).
  Normalization normalization;

  // Values in one sample: product(shape).
  int64_t SampleSize() const;
  // "1x28x28", for messages.
  std::string ShapeString() const;
};

// Checks that `n` (one pair, or one per channel) fits `data` and returns the
// error naming `what` otherwise.
Status CheckNormalization(const Dataset& data, const Normalization& n, const std::string& what);

// Numbers `data`'s classes as `classes` (the federation's class names, by
// index) does: each of its class names must be one of them; labels are
// rewritten, and class_names and num_classes become those of `classes`. Data
// with numeric labels (no class names) is left as it is. InvalidArgument
// naming the class and `what` when one is not in `classes`.
Status UseClassNames(Dataset* data, const std::vector<std::string>& classes,
                     const std::string& what);

// Per-channel mean and standard deviation of `data`'s values (bytes scaled to
// [0, 1]), what --normalize auto uses. A channel with no spread gets std 1.
Normalization ComputeNormalization(const Dataset& data);

// Reads a pair of IDX files (samples of any shape: N x H x W, N x C x H x W or
// N x F, bytes or float32; labels N, bytes) and checks they agree: same count.
// num_classes is the largest label + 1.
Result<Dataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path);

// Which half of an MNIST-format folder to read.
enum class Split { kTrain, kTest };

// Loads the train or test split from a folder holding MNIST-named IDX files
// (train-images-idx3-ubyte, ...; any shape, see LoadIdxPair). NotFound when
// the split's files are missing.
Result<Dataset> LoadMnistFolder(const std::string& dir, Split split);

// True when `dir` holds the IDX files of `split`.
bool HasIdxSplit(const std::string& dir, Split split);

// The samples of `data` at `indices`, in that order. InvalidArgument when an
// index is out of range.
Result<Dataset> SelectSamples(const Dataset& data, const std::vector<int64_t>& indices);

// Writes `data` as the images and labels IDX files of `split` into `dir`
// (created if missing), durably, so that LoadMnistFolder(dir, split) reads it
// back: how a device's data folder is made from a shard of a shared set (any
// format: float samples are written as float32 IDX).
Status WriteMnistFolder(const std::string& dir, Split split, const Dataset& data);

}  // namespace fl

#endif  // FEDGE_COMMON_DATASET_H_
