// Loading a training and a test split from what users have: what `--data`,
// `--test-data`, `--test-fraction`, `--label-column` and `--normalize` name.
//
// `--data` is one of:
//   - a folder of IDX files with MNIST's names (train-images-idx3-ubyte, ...),
//     samples of any shape, bytes or float32 (common/dataset.h);
//   - a folder of images (PNG, JPEG, BMP, ...) in one sub-folder per class,
//     directly or under train/ and test/ sub-folders; every image must have the
//     size of the first (grey images are read as 1 channel, colour as 3);
//   - a CSV file: numeric features, one label column (`label_column`: a
//     header name, or a 0-based index when there is no header; default the
//     last column), header optional (detected: a first row with a
//     non-numeric feature field is a header). Labels are integers >= 0, or
//     text (classes then in sorted order).
// The test split comes from `test_path` (the same forms), else the data's own
// test split (IDX t10k files, a test/ folder), else `test_fraction` of the
// training samples, carved deterministically (the same samples on every
// machine and run).
//
// Every error names the file and what is wrong: ragged rows, non-numeric
// fields, a label column that is not there, images of different sizes, more
// than 256 classes, a test split whose samples do not have the training
// shape or whose classes the training split does not have.
#ifndef FEDGE_COMMON_DATA_LOADER_H_
#define FEDGE_COMMON_DATA_LOADER_H_

#include <string>
#include <utility>
#include <vector>

#include "common/dataset.h"
#include "common/status.h"

namespace fl {

struct DataOptions {
  std::string path;          // --data
  std::string test_path;     // --test-data (empty: from `path`)
  double test_fraction{0};   // --test-fraction, in [0, 1)
  std::string label_column;  // --label-column (CSV)
  std::string group_column;  // CSV column naming each sample's device (partition "column")
  // --normalize: "auto" (or empty) computes per-channel statistics from the
  // training split (from the test split when there is none, or when only the
  // test split is asked for and `test_path` gives it: an evaluating server
  // then reads nothing else); "none" applies none; otherwise
  // "mean,std[,mean,std...]".
  std::string normalize;
};

// Options that read `path`, every other setting at its default.
inline DataOptions DataAt(std::string path) {
  DataOptions o;
  o.path = std::move(path);
  return o;
}

struct DataSplits {
  Dataset train;  // empty when not asked for
  Dataset test;   // empty when not asked for, or when there is none
  // Where the normalisation came from, for the log: "--normalize",
  // "computed from the training split", ...
  std::string normalization_source;
  // Anything the log should say about how the data was read.
  std::string note;
};

// Loads the splits asked for (the other one may still be read, to compute the
// normalisation or to carve the test split). NotFound when a split asked for
// does not exist; InvalidArgument / Corruption naming the file otherwise.
// Both splits carry the same normalisation and class names.
Result<DataSplits> LoadData(const DataOptions& options, bool need_train, bool need_test);

// One line for logs: "60000 train / 10000 test samples of 1x28x28 bytes, 10
// classes, normalised 0.1307,0.3081 (computed from the training split)".
std::string DescribeData(const DataSplits& d);

// The kind of data at `path`, for messages and --help: "idx", "csv",
// "class folders", or "" when it is none of them.
std::string DataFormatOf(const std::string& path);

// Whether `dir` holds training data LoadData can read (an IDX folder with its
// training files, or class folders): what a device folder of partition
// "folders" must be.
bool IsDataFolder(const std::string& dir);

}  // namespace fl

#endif  // FEDGE_COMMON_DATA_LOADER_H_
