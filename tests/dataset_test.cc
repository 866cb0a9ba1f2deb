#include "common/dataset.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace fl {
namespace {

// Builds an IDX file of unsigned bytes with the given dims; element i = i % 251.
std::string MakeIdx(const std::vector<uint32_t>& dims, uint8_t mod = 251) {
  std::string s = {0, 0, 0x08, static_cast<char>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    n *= d;
    for (int shift = 24; shift >= 0; shift -= 8)
      s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(i % mod));
  return s;
}

TEST(IdxTest, ParsesValidFile) {
  auto r = ParseIdx("x", MakeIdx({3, 2, 4}));
  ASSERT_FL_OK(r);
  EXPECT_EQ(r->dims, (std::vector<uint32_t>{3, 2, 4}));
  ASSERT_EQ(r->data.size(), 24u);
  EXPECT_EQ(r->data[23], 23);
}

TEST(IdxTest, RejectsBadMagic) {
  std::string s = MakeIdx({4});
  s[0] = 0x1f;  // gzip's first byte: a common mistake is to pass the .gz file
  auto r = ParseIdx("labels.gz", s);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("labels.gz"), std::string::npos);
  EXPECT_NE(r.status().message().find("bad magic"), std::string::npos);
}

TEST(IdxTest, RejectsUnsupportedTypeAndDims) {
  std::string s = MakeIdx({4});
  s[2] = 0x0B;  // int16
  auto r = ParseIdx("f", s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("0x0b"), std::string::npos) << r.status().ToString();
  // Float32 elements take four bytes each: four bytes for four is truncated.
  s = MakeIdx({4});
  s[2] = 0x0D;
  EXPECT_NE(ParseIdx("f", s).status().message().find("needing 24 bytes"), std::string::npos);
  s = MakeIdx({4});
  s[3] = 0;
  EXPECT_NE(ParseIdx("f", s).status().message().find("dimension count"), std::string::npos);
  s[3] = 9;
  EXPECT_FALSE(ParseIdx("f", s).ok());
}

TEST(IdxTest, RejectsTruncatedAnywhere) {
  const std::string full = MakeIdx({5, 3, 3});
  // Every proper prefix, including inside the magic and the header, is an error.
  for (size_t len = 0; len < full.size(); ++len) {
    auto r = ParseIdx("images", full.substr(0, len));
    ASSERT_FALSE(r.ok()) << "prefix of " << len << " bytes accepted";
    EXPECT_TRUE(r.status().IsCorruption());
    EXPECT_NE(r.status().message().find("truncated"), std::string::npos)
        << len << ": " << r.status().ToString();
  }
}

TEST(IdxTest, RejectsTrailingBytes) {
  auto r = ParseIdx("images", MakeIdx({2, 2}) + "xx");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("2 trailing bytes"), std::string::npos);
}

TEST(IdxTest, HugeDeclaredSizeDoesNotAllocate) {
  // 4 x 0xffffffff dims would be 2^128 bytes; must be rejected as truncated.
  std::string s = {0, 0, 0x08, 4};
  for (int i = 0; i < 16; ++i) s.push_back(static_cast<char>(0xff));
  auto r = ParseIdx("hostile", s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos);
}

TEST(IdxTest, MissingFileIsNotFound) {
  auto r = ReadIdxFile("/nonexistent/fedge/file");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_NE(r.status().message().find("/nonexistent/fedge/file"), std::string::npos);
}

class MnistFolderTest : public ::testing::Test {
 protected:
  void Write(const std::string& name, const std::string& bytes) {
    test::WriteFile(dir_.path() + "/" + name, bytes);
  }
  void WriteAll(uint32_t train, uint32_t test, uint32_t rows = 28) {
    Write("train-images-idx3-ubyte", MakeIdx({train, rows, 28}));
    Write("train-labels-idx1-ubyte", MakeIdx({train}, 10));
    Write("t10k-images-idx3-ubyte", MakeIdx({test, rows, 28}));
    Write("t10k-labels-idx1-ubyte", MakeIdx({test}, 10));
  }
  test::TempDir dir_;
};

TEST_F(MnistFolderTest, LoadsAnyFolderWithTheFourFiles) {
  WriteAll(30, 7);
  auto train = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FL_OK(train);
  EXPECT_EQ(train->count, 30);
  EXPECT_EQ(train->shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(train->num_classes, 10);
  EXPECT_EQ(train->labels[13], 3);
  auto test = LoadMnistFolder(dir_.path(), Split::kTest);
  ASSERT_FL_OK(test);
  EXPECT_EQ(test->count, 7);
}

TEST_F(MnistFolderTest, AcceptsDottedNames) {
  Write("train-images.idx3-ubyte", MakeIdx({5, 28, 28}));
  Write("train-labels.idx1-ubyte", MakeIdx({5}, 10));
  EXPECT_FL_OK(LoadMnistFolder(dir_.path(), Split::kTrain));
}

TEST_F(MnistFolderTest, CountMismatchNamesBothFiles) {
  WriteAll(30, 7);
  Write("train-labels-idx1-ubyte", MakeIdx({29}, 10));
  auto r = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("29 labels"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("30 samples"), std::string::npos);
}

// The labels give the class count; whether a model has that many outputs is
// CheckModelFitsData's to say (TrainerTest.ModelMustFitTheData).
TEST_F(MnistFolderTest, LabelsGiveTheClassCount) {
  WriteAll(30, 7);
  Write("train-labels-idx1-ubyte", MakeIdx({30}, 12));  // labels 10, 11 appear
  auto r = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FL_OK(r);
  EXPECT_EQ(r->num_classes, 12);
}

// IDX samples of any shape: N x H x W (one channel), N x C x H x W, N x F,
// bytes or float32; what WriteMnistFolder writes reads back the same.
TEST_F(MnistFolderTest, AnyShapeAndFloatSamples) {
  WriteAll(4, 4, /*rows=*/32);
  auto r = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FL_OK(r);
  EXPECT_EQ(r->shape, (std::vector<int64_t>{1, 32, 28}));

  test::TempDir other;
  Dataset rgb;
  rgb.count = 2;
  rgb.shape = {3, 4, 5};
  rgb.num_classes = 2;
  for (int i = 0; i < 2 * 60; ++i) rgb.pixels.push_back(static_cast<uint8_t>(i));
  rgb.labels = {0, 1};
  ASSERT_FL_OK(WriteMnistFolder(other.path() + "/rgb", Split::kTrain, rgb));
  auto rgb_back = LoadMnistFolder(other.path() + "/rgb", Split::kTrain);
  ASSERT_FL_OK(rgb_back);
  EXPECT_EQ(rgb_back->shape, rgb.shape);
  EXPECT_EQ(rgb_back->pixels, rgb.pixels);

  Dataset vec;
  vec.count = 3;
  vec.shape = {2};
  vec.num_classes = 3;
  vec.floats = true;
  vec.features = {0.5f, -1.25f, 3e7f, 0.0f, -0.0f, 1e-30f};
  vec.labels = {2, 0, 1};
  ASSERT_FL_OK(WriteMnistFolder(other.path() + "/vec", Split::kTest, vec));
  auto vec_back = LoadMnistFolder(other.path() + "/vec", Split::kTest);
  ASSERT_FL_OK(vec_back);
  EXPECT_TRUE(vec_back->floats);
  EXPECT_EQ(vec_back->shape, vec.shape);
  EXPECT_EQ(vec_back->features, vec.features);
  EXPECT_EQ(vec_back->labels, vec.labels);
}

TEST_F(MnistFolderTest, MissingFileSaysWhatToDo) {
  Write("train-images-idx3-ubyte", MakeIdx({5, 28, 28}));
  auto r = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_NE(r.status().message().find("train-labels-idx1-ubyte"), std::string::npos);
  EXPECT_NE(r.status().message().find("setup.sh"), std::string::npos);
}

TEST_F(MnistFolderTest, TruncatedFileOnDiskNamesIt) {
  WriteAll(30, 7);
  std::string full = MakeIdx({30, 28, 28});
  Write("train-images-idx3-ubyte", full.substr(0, full.size() - 100));
  auto r = LoadMnistFolder(dir_.path(), Split::kTrain);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("train-images-idx3-ubyte: truncated"), std::string::npos)
      << r.status().ToString();
}

TEST(RealMnistTest, CountsAndLabelHistogram) {
  auto train = LoadMnistFolder(test::MnistDir(), Split::kTrain);
  ASSERT_FL_OK(train);
  auto t10k = LoadMnistFolder(test::MnistDir(), Split::kTest);
  ASSERT_FL_OK(t10k);
  EXPECT_EQ(train->count, 60000);
  EXPECT_EQ(t10k->count, 10000);
  std::vector<int> hist(10, 0);
  for (uint8_t l : train->labels) hist[l]++;
  // The published MNIST training label counts.
  EXPECT_EQ(hist, (std::vector<int>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}));
}

// A client's shard written as its own data folder reads back the same.
TEST(ShardFolderTest, SelectedSamplesWrittenAndReadBack) {
  Dataset all;
  all.count = 5;
  all.shape = {1, 28, 28};
  all.num_classes = 10;
  for (int64_t i = 0; i < all.count * 28 * 28; ++i)
    all.pixels.push_back(static_cast<uint8_t>(i % 253));
  all.labels = {3, 1, 4, 1, 5};
  auto shard = SelectSamples(all, {4, 0, 2});
  ASSERT_FL_OK(shard);
  EXPECT_EQ(shard->labels, (std::vector<uint8_t>{5, 3, 4}));
  EXPECT_EQ(shard->pixels[0], all.pixels[4 * 784]);
  test::TempDir dir;
  ASSERT_FL_OK(WriteMnistFolder(dir.path() + "/c0", Split::kTrain, *shard));
  auto back = LoadMnistFolder(dir.path() + "/c0", Split::kTrain);
  ASSERT_FL_OK(back);
  EXPECT_EQ(back->count, 3);
  EXPECT_EQ(back->pixels, shard->pixels);
  EXPECT_EQ(back->labels, shard->labels);
  EXPECT_TRUE(SelectSamples(all, {5}).status().IsInvalidArgument());
  EXPECT_TRUE(SelectSamples(all, {-1}).status().IsInvalidArgument());
}

// A device that lacks a class numbers its classes as the federation does:
// "dog" and "fox" of a device become 1 and 2 of (cat, dog, fox), not 0 and 1.
// A class the federation does not have is refused by name; numeric labels and
// a list that is already the device's are left alone.
TEST(UseClassNamesTest, RenumbersADevicesClassesByTheFederations) {
  Dataset d;
  d.count = 3;
  d.shape = {1};
  d.floats = true;
  d.features = {1, 2, 3};
  d.class_names = {"dog", "fox"};
  d.num_classes = 2;
  d.labels = {1, 0, 1};
  const std::vector<std::string> federation = {"cat", "dog", "fox"};
  ASSERT_FL_OK(UseClassNames(&d, federation, "device"));
  EXPECT_EQ(d.labels, (std::vector<uint8_t>{2, 1, 2}));
  EXPECT_EQ(d.class_names, federation);
  EXPECT_EQ(d.num_classes, 3);
  ASSERT_FL_OK(UseClassNames(&d, federation, "device"));  // already so
  EXPECT_EQ(d.labels, (std::vector<uint8_t>{2, 1, 2}));

  Dataset odd = d;
  odd.class_names = {"cat", "wolf", "fox"};
  const Status st = UseClassNames(&odd, federation, "device");
  EXPECT_NE(st.ToString().find("device: has class 'wolf', which is not one of the federation's "
                               "(cat, dog, fox)"),
            std::string::npos)
      << st.ToString();
  EXPECT_EQ(odd.labels, d.labels);  // untouched

  // Labels are bytes: a federation of more than 256 classes is refused, not
  // wrapped around.
  std::vector<std::string> many;
  for (int i = 0; i < 257; ++i) many.push_back("c" + std::to_string(i));
  Dataset wide = d;
  wide.class_names = {"c1", "c256"};  // c256 would become label 0
  const Status too_many = UseClassNames(&wide, many, "device");
  EXPECT_NE(too_many.ToString().find("at most 256"), std::string::npos) << too_many.ToString();
  EXPECT_EQ(wide.labels, d.labels);

  Dataset numeric = d;
  numeric.class_names.clear();
  numeric.labels = {0, 1, 0};
  ASSERT_FL_OK(UseClassNames(&numeric, {"x", "y"}, "device"));
  EXPECT_EQ(numeric.labels, (std::vector<uint8_t>{0, 1, 0}));
}

}  // namespace
}  // namespace fl
