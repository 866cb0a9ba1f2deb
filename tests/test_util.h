// Helpers shared by the test suites.
#ifndef FEDGE_TESTS_TEST_UTIL_H_
#define FEDGE_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/status.h"

// Asserts that a Status (or Result) is OK, printing it otherwise.
// The status is copied out of `expr` at once: `expr` may be a member of a
// temporary (TrainLocal(...).status()), which is gone after this statement.
#define ASSERT_FL_OK(expr)                                   \
  do {                                                       \
    const ::fl::Status fl_s_ = ::fl::test::StatusOf((expr)); \
    ASSERT_TRUE(fl_s_.ok()) << fl_s_.ToString();             \
  } while (0)
#define EXPECT_FL_OK(expr)                                   \
  do {                                                       \
    const ::fl::Status fl_s_ = ::fl::test::StatusOf((expr)); \
    EXPECT_TRUE(fl_s_.ok()) << fl_s_.ToString();             \
  } while (0)

namespace fl {
namespace test {

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

// The gtest random seed (pinned with --gtest_random_seed=N to replay a failure).
inline uint64_t RandomSeed() {
  return static_cast<uint64_t>(::testing::UnitTest::GetInstance()->random_seed());
}

// A fresh temporary directory, removed at destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/fedge_test_XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    path_ = p ? p : "/tmp";
  }
  // FL_KEEP_TEST_DIRS=1 keeps them (logs of a failing process test).
  ~TempDir() {
    if (!std::getenv("FL_KEEP_TEST_DIRS")) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Where setup.sh puts MNIST; tests that need real data fail (not skip) without it.
inline std::string MnistDir() {
  const char* env = std::getenv("FEDGE_MNIST_DIR");
  return env ? env : FL_TEST_MNIST_DIR;
}

// MNIST's first 12,000 training examples and its whole test split (the build
// makes them, tests/CMakeLists.txt): for simulations whose checks do not
// depend on the amount of data, at a fifth of the training time.
inline std::string SmallMnistDir() {
  const char* env = std::getenv("FEDGE_MNIST_SMALL_DIR");
  return env ? env : FL_TEST_MNIST_SMALL_DIR;
}

// A split of MNIST, normalised with its published statistics (what the tools'
// --normalize auto computes, within their 4-decimal rounding, 5e-5).
inline Result<Dataset> LoadMnist(Split split) {
  auto d = LoadMnistFolder(MnistDir(), split);
  if (d.ok()) d->normalization = MnistNormalization();
  return d;
}

// One row of a server's rounds.csv, as the tests read it.
struct RoundRow {
  int round{0}, participants{0};
  std::string accuracy;  // empty when the round was not evaluated
  double seconds{0};     // round_seconds
  double eval_seconds{0};
  std::string epsilon;  // the 10th column, when the run was private
  int64_t download_bytes{0};
};

// Reads rounds.csv (kRoundsCsvHeader's columns); rows with too few fields are
// skipped.
inline std::vector<RoundRow> ReadRoundsCsv(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::vector<RoundRow> rows;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    if (f.size() < 8) continue;
    rows.push_back({std::stoi(f[0]), std::stoi(f[1]), f[2], std::stod(f[6]), std::stod(f[7]),
                    f.size() > 9 ? f[9] : "", std::stoll(f[5])});
  }
  return rows;
}

}  // namespace test
}  // namespace fl

#endif  // FEDGE_TESTS_TEST_UTIL_H_
