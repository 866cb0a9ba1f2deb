#include "common/data_loader.h"

#include <stb/stb_image.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>

#include "common/file_util.h"
#include "common/random.h"

namespace fl {
namespace {

namespace fs = std::filesystem;

// Labels are bytes on the wire and in IDX files.
constexpr int kMaxClasses = 256;
// Seed of the --test-fraction carve: fixed, so every run and machine holds
// out the same samples.
constexpr uint64_t kCarveSeed = 0x7e57f4ac;

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Sub-folders of `dir` in name order (hidden ones skipped).
std::vector<std::string> SubFolders(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e;
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] != '.' && it->is_directory(e)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool IsImageName(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const char* kExts[] = {"png", "jpg", "jpeg", "bmp", "gif", "tga", "pgm", "ppm", "pnm"};
  return std::find_if(std::begin(kExts), std::end(kExts),
                      [&](const char* e) { return ext == e; }) != std::end(kExts);
}

// Class folders: `dir`/<class>/<image>. With `classes` given (the training
// split's), those are the classes and a folder of another name is an error;
// otherwise they are the sub-folders of `dir` in name order.
Result<Dataset> LoadClassFolders(const std::string& dir, const std::vector<std::string>* classes) {
  Dataset ds;
  const std::vector<std::string> found = SubFolders(dir);
  if (found.empty()) {
    return Status::InvalidArgument(dir, "holds neither IDX files nor class sub-folders of images");
  }
  if (classes) {
    for (const auto& name : found) {
      if (std::find(classes->begin(), classes->end(), name) == classes->end()) {
        return Status::InvalidArgument(dir + "/" + name,
                                       "is a class the training split does not have");
      }
    }
    ds.class_names = *classes;
  } else {
    ds.class_names = found;
  }
  if (ds.class_names.size() > kMaxClasses) {
    return Status::InvalidArgument(dir, "holds " + std::to_string(ds.class_names.size()) +
                                            " class folders; at most 256 classes are supported");
  }
  ds.num_classes = static_cast<int>(ds.class_names.size());
  int width = 0, height = 0, channels = 0;
  std::string first;
  for (int label = 0; label < ds.num_classes; ++label) {
    const std::string class_dir = dir + "/" + ds.class_names[label];
    if (!IsDir(class_dir)) continue;  // a test split may lack a class
    std::vector<std::string> files;
    std::error_code ec;
    for (fs::directory_iterator it(class_dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      std::error_code e;
      if (it->is_regular_file(e) && IsImageName(name)) files.push_back(name);
    }
    if (ec) return Status::IOError(class_dir, ec.message());
    std::sort(files.begin(), files.end());
    for (const auto& name : files) {
      const std::string path = class_dir + "/" + name;
      int w = 0, h = 0, n = 0;
      unsigned char* px = stbi_load(path.c_str(), &w, &h, &n, channels);
      if (!px) {
        return Status::Corruption(path, std::string("cannot decode image: ") +
                                            (stbi_failure_reason() ? stbi_failure_reason() : "?"));
      }
      if (channels == 0) {
        // The first image decides: grey (with or without alpha) is one channel,
        // anything else three.
        channels = n <= 2 ? 1 : 3;
        width = w;
        height = h;
        first = path;
        if (n != channels) {
          stbi_image_free(px);
          px = stbi_load(path.c_str(), &w, &h, &n, channels);
          if (!px) return Status::Corruption(path, "cannot decode image");
        }
        ds.shape = {channels, height, width};
      } else if (w != width || h != height) {
        stbi_image_free(px);
        return Status::InvalidArgument(
            path, "is " + std::to_string(w) + "x" + std::to_string(h) + "; the first image (" +
                      first + ") is " + std::to_string(width) + "x" + std::to_string(height) +
                      ": every image of a data set must have one size");
      }
      // Interleaved H x W x C to planar C x H x W.
      const size_t plane = static_cast<size_t>(width) * height;
      const size_t base = ds.pixels.size();
      ds.pixels.resize(base + plane * channels);
      for (size_t p = 0; p < plane; ++p) {
        for (int c = 0; c < channels; ++c) ds.pixels[base + c * plane + p] = px[p * channels + c];
      }
      stbi_image_free(px);
      ds.labels.push_back(static_cast<uint8_t>(label));
      ++ds.count;
    }
  }
  if (ds.count == 0) return Status::InvalidArgument(dir, "its class folders hold no images");
  return ds;
}

// --- CSV -------------------------------------------------------------------

// Splits one CSV line into fields (RFC 4180 quoting: "a,b" and "" inside).
std::vector<std::string> SplitCsvLine(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back().push_back('"');
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        out.back().push_back(ch);
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      out.emplace_back();
    } else {
      out.back().push_back(ch);
    }
  }
  for (auto& f : out) {
    const size_t b = f.find_first_not_of(" \t");
    const size_t e = f.find_last_not_of(" \t");
    f = b == std::string::npos ? std::string() : f.substr(b, e - b + 1);
  }
  return out;
}

bool ParseNumber(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*v);
}

// Resolves a column named by header name or 0-based index; -1 = `fallback`.
Result<int> ResolveColumn(const std::string& path, const std::string& spec,
                          const std::vector<std::string>& header, int columns, int fallback,
                          const std::string& flag) {
  if (spec.empty()) return fallback;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == spec) return static_cast<int>(i);
  }
  double v;
  if (ParseNumber(spec, &v) && v == std::floor(v) && v >= 0 && v < columns) {
    return static_cast<int>(v);
  }
  std::string names;
  for (const auto& h : header) names += (names.empty() ? "" : ", ") + h;
  return Status::InvalidArgument(path, flag + " '" + spec + "' is not a column" +
                                           (header.empty() ? " (no header; give a 0-based index "
                                                             "below " +
                                                                 std::to_string(columns) + ")"
                                                           : " (columns: " + names + ")"));
}

struct CsvTable {
  std::vector<std::string> header;             // empty when the file has none
  std::vector<std::vector<std::string>> rows;  // every row has header/first-row width
  std::vector<int> line;                       // 1-based file line of each row
};

Result<CsvTable> ReadCsv(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  CsvTable t;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    std::string line = text->substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto fields = SplitCsvLine(line);
    if (!t.rows.empty() && fields.size() != t.rows.front().size()) {
      return Status::InvalidArgument(path, "line " + std::to_string(line_no) + " has " +
                                               std::to_string(fields.size()) + " fields, line " +
                                               std::to_string(t.line.front()) + " has " +
                                               std::to_string(t.rows.front().size()));
    }
    t.rows.push_back(std::move(fields));
    t.line.push_back(line_no);
  }
  if (t.rows.empty()) return Status::InvalidArgument(path, "holds no rows");
  // A header: a first row with a field that is text where the second row has
  // a number. Empty fields and "nan" / "inf" are not text: such a first row
  // is data, refused later by its line.
  auto is_text = [](const std::string& f) {
    if (f.empty()) return false;
    char* end = nullptr;
    std::strtod(f.c_str(), &end);
    return end != f.c_str() + f.size();
  };
  if (t.rows.size() >= 2) {
    bool header = false;
    double v;
    for (size_t i = 0; i < t.rows[0].size(); ++i) {
      header |= is_text(t.rows[0][i]) && ParseNumber(t.rows[1][i], &v);
    }
    if (header) {
      t.header = std::move(t.rows.front());
      t.rows.erase(t.rows.begin());
      t.line.erase(t.line.begin());
    }
  }
  if (t.rows.front().size() < 2) {
    return Status::InvalidArgument(path,
                                   "has one column; a CSV data set needs features and a label");
  }
  return t;
}

// How a CSV's labels become class indexes: integers >= 0 as they are
// (`*numeric`, `*values`), else text mapped to classes: the training split's
// `classes` when given, else the distinct labels in sorted order
// (`ds->class_names`, `*index`).
Status CsvLabels(const std::string& path, const CsvTable& table, int label,
                 const std::vector<std::string>* classes, bool numeric_labels, Dataset* ds,
                 bool* numeric, std::vector<double>* values, std::map<std::string, int>* index) {
  *numeric = classes == nullptr || classes->empty();
  values->assign(table.rows.size(), 0);
  for (size_t r = 0; *numeric && r < table.rows.size(); ++r) {
    double v = 0;
    *numeric = ParseNumber(table.rows[r][label], &v) && v >= 0 && v == std::floor(v);
    (*values)[r] = v;
  }
  if (!*numeric && numeric_labels) {
    return Status::InvalidArgument(path,
                                   "has a label that is not an integer >= 0, where the "
                                   "training data's labels are integers");
  }
  if (*numeric) return Status::OK();
  if (classes && !classes->empty()) {
    ds->class_names = *classes;
  } else {
    std::map<std::string, int> seen;
    for (const auto& row : table.rows) seen[row[label]] = 0;
    for (const auto& [name, i] : seen) ds->class_names.push_back(name);
  }
  for (size_t i = 0; i < ds->class_names.size(); ++i) {
    (*index)[ds->class_names[i]] = static_cast<int>(i);
  }
  return Status::OK();
}

// Reads a CSV file. `classes`: the training split's class names when this is a
// test file whose labels are text. `group_names` is filled (and extended) with
// the group column's values when `group_column` is set.
Result<Dataset> LoadCsv(const std::string& path, const DataOptions& o,
                        const std::vector<std::string>* classes, bool numeric_labels = false) {
  auto table = ReadCsv(path);
  if (!table.ok()) return table.status();
  const int columns = static_cast<int>(table->rows.front().size());
  auto label =
      ResolveColumn(path, o.label_column, table->header, columns, columns - 1, "--label-column");
  if (!label.ok()) return label.status();
  auto group = ResolveColumn(path, o.group_column, table->header, columns, -1, "group column");
  if (!group.ok()) return group.status();
  if (*group == *label) {
    return Status::InvalidArgument(path, "the group column is the label column");
  }
  auto column_name = [&](int c) {
    return c < static_cast<int>(table->header.size()) ? "'" + table->header[c] + "'"
                                                      : std::to_string(c);
  };
  Dataset ds;
  ds.floats = true;
  const int features = columns - 1 - (*group >= 0 ? 1 : 0);
  if (features < 1) {
    return Status::InvalidArgument(path, "has no feature column besides the label and group");
  }
  ds.shape = {features};
  ds.count = static_cast<int64_t>(table->rows.size());
  ds.features.reserve(static_cast<size_t>(ds.count) * features);
  bool numeric = true;
  std::vector<double> label_values;
  std::map<std::string, int> class_index;
  FL_RETURN_IF_ERROR(CsvLabels(path, *table, *label, classes, numeric_labels, &ds, &numeric,
                               &label_values, &class_index));
  std::map<std::string, int> group_index;
  for (size_t r = 0; r < table->rows.size(); ++r) {
    const auto& row = table->rows[r];
    const std::string where = "line " + std::to_string(table->line[r]);
    for (int c = 0; c < columns; ++c) {
      if (c == *label || c == *group) continue;
      double v;
      if (!ParseNumber(row[c], &v)) {
        return Status::InvalidArgument(
            path, where + ", column " + column_name(c) + ": '" + row[c] + "' is not a number");
      }
      ds.features.push_back(static_cast<float>(v));
    }
    int y;
    if (numeric) {
      if (label_values[r] >= kMaxClasses) {
        return Status::InvalidArgument(path, where + ": label " + row[*label] +
                                                 " is above 255; at most 256 classes are "
                                                 "supported");
      }
      y = static_cast<int>(label_values[r]);
    } else {
      auto it = class_index.find(row[*label]);
      if (it == class_index.end()) {
        return Status::InvalidArgument(path, where + ": label '" + row[*label] +
                                                 "' is a class the training split does not have");
      }
      y = it->second;
    }
    ds.labels.push_back(static_cast<uint8_t>(y));
    ds.num_classes = std::max(ds.num_classes, y + 1);
    if (*group >= 0) {
      auto [it, added] = group_index.emplace(row[*group], static_cast<int>(group_index.size()));
      if (added) ds.group_names.push_back(row[*group]);
      ds.groups.push_back(it->second);
    }
  }
  if (!numeric) {
    if (ds.class_names.size() > kMaxClasses) {
      return Status::InvalidArgument(path, "has " + std::to_string(ds.class_names.size()) +
                                               " distinct labels; at most 256 classes are "
                                               "supported");
    }
    ds.num_classes = static_cast<int>(ds.class_names.size());
  }
  return ds;
}

// One split of the data at `path`: for an IDX folder the given split; for
// class folders `path`/train or `path`/test when they exist. `whole` (a
// --test-data path): a CSV file, or class folders without train/ and test/,
// are the split as a whole; otherwise they are the training split only.
// NotFound when that split does not exist.
Result<Dataset> LoadSplit(const std::string& path, Split split, const DataOptions& o,
                          const std::vector<std::string>* classes, bool whole,
                          bool numeric_labels = false) {
  const bool train = split == Split::kTrain;
  if (IsFile(path)) {
    if (!train && !whole) {
      return Status::NotFound(path, "a CSV file is one split");
    }
    return LoadCsv(path, o, classes, numeric_labels);
  }
  if (!IsDir(path)) return Status::NotFound(path, "no such file or folder");
  if (HasIdxSplit(path, Split::kTrain) || HasIdxSplit(path, Split::kTest)) {
    return LoadMnistFolder(path, split);
  }
  if (IsDir(path + "/train") || IsDir(path + "/test")) {
    const std::string sub = path + (train ? "/train" : "/test");
    if (!IsDir(sub)) return Status::NotFound(sub, "no such folder");
    return LoadClassFolders(sub, classes);
  }
  if (!train && !whole) {
    return Status::NotFound(path, "class folders without a test/ sub-folder are one split");
  }
  return LoadClassFolders(path, classes);
}

Status CheckSameKind(const Dataset& train, const Dataset& test, const std::string& test_name) {
  if (train.shape != test.shape || train.floats != test.floats) {
    return Status::InvalidArgument(
        test_name, "holds samples of shape " + test.ShapeString() +
                       (test.floats ? " (floats)" : " (bytes)") + "; the training split's are " +
                       train.ShapeString() + (train.floats ? " (floats)" : " (bytes)"));
  }
  return Status::OK();
}

// Carves `fraction` of `all` as the test split, the same samples every time.
void Carve(const Dataset& all, double fraction, Dataset* train, Dataset* test) {
  std::vector<int64_t> order(static_cast<size_t>(all.count));
  std::iota(order.begin(), order.end(), 0);
  Random rng(kCarveSeed);
  rng.Shuffle(&order);
  const auto n_test = static_cast<size_t>(std::llround(fraction * all.count));
  std::vector<int64_t> test_idx(order.begin(), order.begin() + n_test);
  std::vector<int64_t> train_idx(order.begin() + n_test, order.end());
  // Keep the file order within each part (devices' group blocks stay readable).
  std::sort(test_idx.begin(), test_idx.end());
  std::sort(train_idx.begin(), train_idx.end());
  *test = *SelectSamples(all, test_idx);
  *train = *SelectSamples(all, train_idx);
}

}  // namespace

std::string DescribeData(const DataSplits& d) {
  const Dataset& any = d.train.count > 0 ? d.train : d.test;
  std::string out = std::to_string(d.train.count) + " train / " + std::to_string(d.test.count) +
                    " test samples of " + any.ShapeString() + (any.floats ? " floats" : " bytes") +
                    ", " + std::to_string(any.num_classes) + " classes";
  if (!any.class_names.empty()) {
    out += " (";
    for (size_t i = 0; i < any.class_names.size() && i < 10; ++i) {
      out += (i ? ", " : "") + any.class_names[i];
    }
    out += any.class_names.size() > 10 ? ", ...)" : ")";
  }
  std::string norm =
      any.normalization.empty() ? std::string("with none") : any.normalization.ToString();
  if (any.normalization.mean.size() > 3) {
    // The first three pairs: a CSV's features are many channels.
    size_t cut = 0;
    for (int commas = 0; commas < 6; ++commas) cut = norm.find(',', cut) + 1;
    norm = norm.substr(0, cut) + "... (" + std::to_string(any.normalization.mean.size()) +
           " mean,std pairs)";
  }
  out += ", normalised " + norm + " (" + d.normalization_source + ")";
  if (!d.note.empty()) out += "; " + d.note;
  return out;
}

std::string DataFormatOf(const std::string& path) {
  if (IsFile(path)) return "csv";
  if (!IsDir(path)) return "";
  if (HasIdxSplit(path, Split::kTrain) || HasIdxSplit(path, Split::kTest)) return "idx";
  return SubFolders(path).empty() ? "" : "class folders";
}

bool IsDataFolder(const std::string& dir) {
  if (!IsDir(dir)) return false;
  if (HasIdxSplit(dir, Split::kTrain)) return true;
  if (HasIdxSplit(dir, Split::kTest)) return false;
  return IsDir(dir + "/train") || (!IsDir(dir + "/test") && !SubFolders(dir).empty());
}

namespace {

// The test split when it is carved out of the training split
// (--test-fraction) or read on its own (`path`'s, or --test-data), into
// `out->test`; `*train` loses what is carved.
Status ReadTestSplit(const DataOptions& o, bool need_test, bool auto_norm, Result<Dataset>* train,
                     DataSplits* out) {
  if (train->ok() && o.test_fraction > 0) {
    Dataset all = std::move(*train).value();
    Dataset carved_train, carved_test;
    Carve(all, o.test_fraction, &carved_train, &carved_test);
    if (carved_test.count == 0 || carved_train.count == 0) {
      return Status::InvalidArgument(o.path, "--test-fraction " + std::to_string(o.test_fraction) +
                                                 " of " + std::to_string(all.count) +
                                                 " samples leaves an empty split");
    }
    *train = std::move(carved_train);
    out->test = std::move(carved_test);
    return Status::OK();
  }
  if (!(need_test || (auto_norm && !train->ok()))) return Status::OK();
  const bool given = !o.test_path.empty();
  const std::string test_from = given ? o.test_path : o.path;
  const std::vector<std::string>* classes =
      train->ok() && !(*train)->class_names.empty() ? &(*train)->class_names : nullptr;
  // Integer training labels: the test labels must be integers too (text
  // would be numbered on its own).
  const bool numeric = train->ok() && (*train)->floats && (*train)->class_names.empty();
  auto test = LoadSplit(test_from, Split::kTest, o, classes, given, numeric);
  if (test.ok()) {
    out->test = std::move(test).value();
  } else if (need_test) {
    return test.status().IsNotFound()
               ? Status::NotFound(test_from, test.status().message() +
                                                 ": no test split; give one with --test-data "
                                                 "or carve it with --test-fraction")
               : test.status();
  }
  return Status::OK();
}

// Class names (text labels, class folders) from the test data alone would
// shift every index after a class it lacks: they come from the training
// split of `path` when there is one of the same kind.
Status ClassNamesFromTraining(const DataOptions& o, DataSplits* out) {
  if (out->test.class_names.empty()) return Status::OK();
  auto names_from = LoadSplit(o.path, Split::kTrain, o, nullptr, /*whole=*/false);
  if (names_from.ok() && names_from->shape == out->test.shape &&
      names_from->class_names != out->test.class_names) {
    auto again = LoadSplit(o.test_path, Split::kTest, o, &names_from->class_names, true);
    if (!again.ok()) return again.status();
    out->test = std::move(again).value();
  } else if (!names_from.ok()) {
    out->note =
        "class names from the test data alone (give --data with the training data if "
        "the test data lacks a class)";
  }
  return Status::OK();
}

// The normalisation (--normalize: none, given, or computed from the training
// split, else the test split), set on both splits.
Status Normalize(const DataOptions& o, bool auto_norm, DataSplits* out) {
  Normalization norm;
  if (o.normalize == "none") {
    out->normalization_source = "none (--normalize none)";
  } else if (!auto_norm) {
    auto parsed = ParseNormalization(o.normalize);
    if (!parsed.ok()) return parsed.status();
    norm = *parsed;
    out->normalization_source = "--normalize";
  } else if (out->train.count > 0) {
    norm = ComputeNormalization(out->train);
    out->normalization_source = "computed from the training split";
  } else if (out->test.count > 0) {
    norm = ComputeNormalization(out->test);
    out->normalization_source = "computed from the test split (no training split here)";
  }
  for (Dataset* d : {&out->train, &out->test}) {
    if (d->count == 0) continue;
    FL_RETURN_IF_ERROR(CheckNormalization(*d, norm, "--normalize " + o.normalize));
    d->normalization = norm;
  }
  return Status::OK();
}

}  // namespace

Result<DataSplits> LoadData(const DataOptions& o, bool need_train, bool need_test) {
  if (o.path.empty()) return Status::InvalidArgument("--data", "is empty");
  if (!(o.test_fraction >= 0 && o.test_fraction < 1)) {
    return Status::InvalidArgument("--test-fraction " + std::to_string(o.test_fraction),
                                   "must be in [0, 1)");
  }
  if (o.test_fraction > 0 && !o.test_path.empty()) {
    return Status::InvalidArgument("--test-fraction",
                                   "and --test-data both give a test split; give one");
  }
  DataSplits out;
  const bool auto_norm = o.normalize.empty() || o.normalize == "auto";
  // The training split: when asked for, to carve the test split, or to
  // compute the normalisation. A process that only evaluates, given its test
  // data, reads nothing else (auto then computes from that test data).
  Result<Dataset> train = Status::NotFound(o.path, "not read");
  const bool test_only = !need_train && !o.test_path.empty() && o.test_fraction == 0;
  const bool want_train = need_train || o.test_fraction > 0 || (auto_norm && !test_only);
  if (want_train) {
    train = LoadSplit(o.path, Split::kTrain, o, nullptr, /*whole=*/false);
    if (!train.ok() && (need_train || o.test_fraction > 0 || !train.status().IsNotFound())) {
      return train.status();
    }
  }
  FL_RETURN_IF_ERROR(ReadTestSplit(o, need_test, auto_norm, &train, &out));
  if (test_only) FL_RETURN_IF_ERROR(ClassNamesFromTraining(o, &out));
  if (train.ok()) out.train = std::move(train).value();
  // One class count and shape for both splits.
  if (out.train.count > 0 && out.test.count > 0) {
    FL_RETURN_IF_ERROR(CheckSameKind(out.train, out.test,
                                     o.test_path.empty() ? o.path + " (test split)" : o.test_path));
    const int classes = std::max(out.train.num_classes, out.test.num_classes);
    out.train.num_classes = out.test.num_classes = classes;
  }
  FL_RETURN_IF_ERROR(Normalize(o, auto_norm, &out));
  if (!need_train) out.train = Dataset();
  if (!need_test) out.test = Dataset();
  return out;
}

}  // namespace fl
