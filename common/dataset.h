// Reading image classification datasets stored as IDX files (MNIST format).
//
// Any folder holding the four MNIST-named IDX files works as a dataset folder, so
// other 28x28, 10-class sets (Fashion-MNIST, KMNIST, ...) can be dropped in:
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

// The content of one IDX file of unsigned bytes.
struct IdxArray {
  std::vector<uint32_t> dims;  // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;   // product(dims) bytes, row-major
};

// Parses an IDX file held in memory. `name` is used in error messages only.
// Validates magic, element type, dimension count, and that the length is exactly
// header + product(dims) (no truncation, no trailing bytes).
Result<IdxArray> ParseIdx(const std::string& name, const std::string& bytes);

// Reads and parses the IDX file at `path`.
Result<IdxArray> ReadIdxFile(const std::string& path);

// The input normalisation of MNIST-format images, as training and evaluation
// apply it and the ONNX export records it: x / 255, then (x - mean) / std
// (MNIST's training-set pixel statistics after scaling to [0, 1]).
constexpr double kMnistPixelMean = 0.1307;
constexpr double kMnistPixelStd = 0.3081;

// An in-memory labelled image set: `count` images of rows x cols bytes each.
struct ImageDataset {
  int64_t count{0};
  int rows{0};
  int cols{0};
  int num_classes{0};
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major
  std::vector<uint8_t> labels;  // count labels in [0, num_classes)
};

// Reads a pair of IDX files (3-d images, 1-d labels) and checks they agree:
// same count, every label < num_classes.
Result<ImageDataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path,
                                 int num_classes);

// Which half of an MNIST-format folder to read.
enum class Split { kTrain, kTest };

// Loads the train or test split from a folder holding the four MNIST-named
// IDX files. Requires 28x28 images and labels in [0, 10).
Result<ImageDataset> LoadMnistFolder(const std::string& dir, Split split);

// The samples of `data` at `indices`, in that order. InvalidArgument when an
// index is out of range.
Result<ImageDataset> SelectSamples(const ImageDataset& data, const std::vector<int64_t>& indices);

// Writes `data` as the images and labels IDX files of `split` into `dir`
// (created if missing), durably, so that LoadMnistFolder(dir, split) reads it
// back: how a device's data folder is made from a shard of a shared set.
Status WriteMnistFolder(const std::string& dir, Split split, const ImageDataset& data);

}  // namespace fl

#endif  // FEDGE_COMMON_DATASET_H_
