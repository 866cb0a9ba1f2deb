// Data formats users bring: CSV files, class folders of images, IDX of any
// shape; the test split given, carved or missing; the normalisation given,
// computed or refused; every error naming the file and the mismatch.
#include "common/data_loader.h"

#include <gtest/gtest.h>
#include <stb/stb_image_write.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/partition.h"
#include "tests/test_util.h"

namespace fl {
namespace {

class DataLoaderTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_.path() + "/" + name;
    test::WriteFile(path, text);
    return path;
  }
  // A w x h image of `channels` channels whose every value is `value`.
  void Png(const std::string& rel, int w, int h, int channels, uint8_t value) {
    const std::string path = dir_.path() + "/" + rel;
    ASSERT_FL_OK(CreateDirectories(path.substr(0, path.rfind('/'))));
    std::vector<uint8_t> px(static_cast<size_t>(w * h * channels), value);
    ASSERT_NE(stbi_write_png(path.c_str(), w, h, channels, px.data(), w * channels), 0);
  }
  Result<DataSplits> Load(DataOptions o, bool train = true, bool test = false) {
    return LoadData(o, train, test);
  }
  test::TempDir dir_;
};

TEST_F(DataLoaderTest, CsvWithHeaderAndNamedLabelColumn) {
  const std::string csv = Write("wine.csv",
                                "alcohol,label,ash\n"
                                "13.2,1,2.5\n"
                                "12.0,0,1.5\n"
                                "14.1,2,3.0\n"
                                "\n"
                                "11.5,1,2.0\r\n");
  DataOptions o;
  o.path = csv;
  o.label_column = "label";
  auto d = Load(o);
  ASSERT_FL_OK(d);
  const Dataset& t = d->train;
  EXPECT_TRUE(t.floats);
  EXPECT_EQ(t.count, 4);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(t.num_classes, 3);
  EXPECT_EQ(t.labels, (std::vector<uint8_t>{1, 0, 2, 1}));
  EXPECT_EQ(t.features, (std::vector<float>{13.2f, 2.5f, 12.0f, 1.5f, 14.1f, 3.0f, 11.5f, 2.0f}));
  // auto: per feature (a vector's channels are its features). The four
  // floats add exactly in double and / 4 is exact: one rounding, to float.
  ASSERT_EQ(t.normalization.mean.size(), 2u);
  EXPECT_EQ(t.normalization.mean[0],
            static_cast<float>((static_cast<double>(13.2f) + 12.0f + 14.1f + 11.5f) / 4));
  EXPECT_NE(d->normalization_source.find("training split"), std::string::npos);
  // The same column by index; a column that is not there is named.
  o.label_column = "1";
  EXPECT_FL_OK(Load(o));
  o.label_column = "quality";
  auto bad = Load(o);
  EXPECT_NE(bad.status().ToString().find("--label-column 'quality' is not a column (columns: "
                                         "alcohol, label, ash)"),
            std::string::npos)
      << bad.status().ToString();
}

TEST_F(DataLoaderTest, CsvWithoutHeaderTextLabelsAndErrorsNamingTheLine) {
  DataOptions o;
  o.path =
      Write("iris.csv", "5.1,3.5,setosa\n7.0,3.2,versicolor\n6.3,3.3,virginica\n4.9,3.0,setosa\n");
  auto d = Load(o);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->train.count, 4);  // no header: the first row is data
  EXPECT_EQ(d->train.class_names, (std::vector<std::string>{"setosa", "versicolor", "virginica"}));
  EXPECT_EQ(d->train.labels, (std::vector<uint8_t>{0, 1, 2, 0}));

  o.path = Write("ragged.csv", "1,2,0\n3,4,1\n5,1\n");
  EXPECT_NE(Load(o).status().ToString().find("ragged.csv: line 3 has 2 fields, line 1 has 3"),
            std::string::npos)
      << Load(o).status().ToString();
  o.path = Write("text.csv", "a,b,y\n1,2,0\n3,x,1\n");
  EXPECT_NE(Load(o).status().ToString().find("text.csv: line 3, column 'b': 'x' is not a number"),
            std::string::npos)
      << Load(o).status().ToString();
  // A test file whose text label the training file does not have.
  o.path = Write("train.csv", "1,2,cat\n3,4,dog\n");
  o.test_path = Write("test.csv", "1,2,cat\n3,4,bird\n");
  auto t = Load(o, false, true);
  EXPECT_NE(t.status().ToString().find("test.csv: line 2: label 'bird' is a class the training "
                                       "split does not have"),
            std::string::npos)
      << t.status().ToString();
  // An evaluating server given --test-data takes the class names from the
  // training data of --data when there is any: a test file without "dog"
  // still calls "fox" class 2.
  o.path = Write("train3.csv", "1,2,cat\n3,4,dog\n5,6,fox\n");
  o.test_path = Write("test2.csv", "1,2,cat\n3,4,fox\n");
  t = Load(o, false, true);
  ASSERT_FL_OK(t);
  EXPECT_EQ(t->test.labels, (std::vector<uint8_t>{0, 2}));
  EXPECT_EQ(t->test.num_classes, 3);
}

// A natural device split: one client per user, from the CSV's group column.
TEST_F(DataLoaderTest, CsvGroupColumnSplitsByDevice) {
  DataOptions o;
  o.path = Write("users.csv",
                 "user,x,y\n"
                 "ann,0.1,0\nbob,0.2,1\nann,0.3,1\ncid,0.4,0\nbob,0.5,0\n");
  o.group_column = "user";
  o.label_column = "y";
  auto d = Load(o);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->train.shape, (std::vector<int64_t>{1}));  // the group is not a feature
  EXPECT_EQ(d->train.group_names, (std::vector<std::string>{"ann", "bob", "cid"}));
  auto parts = PartitionByGroup(d->train.groups, 3, 3);
  ASSERT_FL_OK(parts);
  EXPECT_EQ(*parts, (Partition{{0, 2}, {1, 4}, {3}}));
  EXPECT_FALSE(PartitionByGroup(d->train.groups, 3, 4).ok());
}

// --test-fraction holds out the same samples every time, and no sample is in
// both splits.
TEST_F(DataLoaderTest, TestFractionIsDeterministicAndDisjoint) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += std::to_string(i) + "," + std::to_string(i % 3) + "\n";
  DataOptions o;
  o.path = Write("seq.csv", text);
  o.test_fraction = 0.2;
  auto a = Load(o, true, true);
  auto b = Load(o, true, true);
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_EQ(a->test.count, 20);
  EXPECT_EQ(a->train.count, 80);
  EXPECT_EQ(a->test.features, b->test.features);
  std::vector<int> seen(100, 0);
  for (float v : a->train.features) seen[static_cast<int>(v)]++;
  for (float v : a->test.features) seen[static_cast<int>(v)]++;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], 1) << i;
  // A CSV has no test split of its own: the error says how to give one.
  o.test_fraction = 0;
  auto none = Load(o, false, true);
  EXPECT_TRUE(none.status().IsNotFound());
  EXPECT_NE(none.status().ToString().find("--test-fraction"), std::string::npos);
}

TEST_F(DataLoaderTest, ClassFoldersOfImages) {
  Png("pets/train/cat/a.png", 4, 3, 3, 10);
  Png("pets/train/cat/b.png", 4, 3, 3, 20);
  Png("pets/train/dog/c.png", 4, 3, 3, 200);
  Png("pets/test/dog/d.png", 4, 3, 3, 100);
  DataOptions o;
  o.path = dir_.path() + "/pets";
  auto d = Load(o, true, true);
  ASSERT_FL_OK(d);
  EXPECT_EQ(DataFormatOf(o.path), "class folders");
  EXPECT_EQ(d->train.count, 3);
  EXPECT_EQ(d->train.shape, (std::vector<int64_t>{3, 3, 4}));  // C x H x W
  EXPECT_EQ(d->train.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(d->train.labels, (std::vector<uint8_t>{0, 0, 1}));
  EXPECT_EQ(d->test.labels, (std::vector<uint8_t>{1}));  // "dog" is class 1 in both
  EXPECT_EQ(d->test.num_classes, 2);
  EXPECT_EQ(d->train.pixels[12], 10);  // image a, channel 1, first pixel
  // Per channel: three means, all equal here.
  // The mean is stored as a float (half an ulp: <= 1.5e-8 at 0.3); the double
  // sums and quotients add ~1e-15.
  ASSERT_EQ(d->train.normalization.mean.size(), 3u);
  EXPECT_NEAR(d->train.normalization.mean[1], (10 + 20 + 200) / 3.0 / 255, 2e-8);

  Png("pets/train/dog/big.png", 8, 8, 3, 0);
  auto bad = Load(o);
  EXPECT_NE(bad.status().ToString().find("big.png: is 8x8; the first image"), std::string::npos)
      << bad.status().ToString();
}

TEST_F(DataLoaderTest, TestSplitMustMatchTheTrainingSplit) {
  Png("gray/train/0/a.png", 5, 5, 1, 1);
  Png("gray/train/1/b.png", 5, 5, 1, 2);
  Png("gray/test/2/c.png", 5, 5, 1, 3);
  DataOptions o;
  o.path = dir_.path() + "/gray";
  auto d = Load(o, true, true);
  EXPECT_NE(d.status().ToString().find("gray/test/2: is a class the training split does not have"),
            std::string::npos)
      << d.status().ToString();
  // Samples of another shape.
  Png("other/0/x.png", 6, 6, 1, 1);
  o.test_path = dir_.path() + "/other";
  d = Load(o, true, true);
  EXPECT_NE(d.status().ToString().find("holds samples of shape 1x6x6 (bytes); the training "
                                       "split's are 1x5x5 (bytes)"),
            std::string::npos)
      << d.status().ToString();
}

TEST_F(DataLoaderTest, NormalizeGivenNoneOrRefused) {
  Png("rgb/train/a/x.png", 2, 2, 3, 51);
  DataOptions o;
  o.path = dir_.path() + "/rgb";
  o.normalize = "0.5,0.25";
  auto d = Load(o);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->train.normalization.ToString(), "0.5,0.25");
  o.normalize = "0.1,0.2,0.3,0.4,0.5,0.6";
  ASSERT_FL_OK(Load(o));
  o.normalize = "0.1,0.2,0.3,0.4";
  EXPECT_NE(Load(o).status().ToString().find("gives 2 mean/std pairs; samples of shape 3x2x2 "
                                             "have 3 channels"),
            std::string::npos)
      << Load(o).status().ToString();
  o.normalize = "0.1,0";
  EXPECT_NE(Load(o).status().ToString().find("std 0"), std::string::npos);
  o.normalize = "0.1,abc";
  EXPECT_NE(Load(o).status().ToString().find("'abc' is not a finite float"), std::string::npos);
  o.normalize = "1e39,1";  // finite as a double, not as a float
  EXPECT_FALSE(Load(o).ok());
  o.normalize = "none";
  auto plain = Load(o);
  ASSERT_FL_OK(plain);
  EXPECT_TRUE(plain->train.normalization.empty());
}

// Inputs that once slipped through: a first row with "nan" taken for a
// header (a row silently lost), text test labels against integer training
// labels (numbered on their own), a CSV with no feature column, and an IDX
// header with a zero dimension (which let any other dimension pass the size
// check and made normalisation allocate for 2^32 channels).
TEST_F(DataLoaderTest, HostileOrOddInputsAreRefusedByName) {
  DataOptions o;
  o.path = Write("nanfirst.csv", "nan,1,0\n2,3,1\n4,5,0\n");
  auto d = Load(o);
  EXPECT_NE(d.status().ToString().find("nanfirst.csv: line 1, column 0: 'nan' is not a number"),
            std::string::npos)
      << d.status().ToString();
  o.path = Write("num.csv", "1,2,0\n3,4,1\n");
  o.test_path = Write("text.csv", "1,2,0\n3,4,cat\n");
  d = Load(o, true, true);
  EXPECT_NE(d.status().ToString().find("text.csv: has a label that is not an integer"),
            std::string::npos)
      << d.status().ToString();
  o.test_path.clear();
  o.path = Write("nofeatures.csv", "user,y\na,0\nb,1\n");
  o.group_column = "user";
  d = Load(o);
  EXPECT_NE(d.status().ToString().find("has no feature column"), std::string::npos)
      << d.status().ToString();
  o.group_column.clear();
  // Images [1, 2^32 - 1, 0, 1]: zero values, so no size check could catch it.
  const std::string idx = dir_.path() + "/zero";
  ASSERT_FL_OK(CreateDirectories(idx));
  test::WriteFile(idx + "/train-images-idx3-ubyte",
                  std::string("\0\0\x08\x04\0\0\0\x01\xff\xff\xff\xff\0\0\0\0\0\0\0\x01", 20));
  test::WriteFile(idx + "/train-labels-idx1-ubyte", std::string("\0\0\x08\x01\0\0\0\x01\x00", 9));
  o.path = idx;
  d = Load(o);
  EXPECT_NE(d.status().ToString().find("dimension 2 is 0"), std::string::npos)
      << d.status().ToString();
}

// MNIST through the same path: auto computes its published statistics.
TEST_F(DataLoaderTest, MnistAutoNormalisationIsItsPublishedStatistics) {
  DataOptions o;
  o.path = test::MnistDir();
  auto d = Load(o, false, true);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->train.count, 0);  // not asked for
  EXPECT_EQ(d->test.count, 10000);
  // Computed from the training split (0.1306605 and 0.3081078); the published
  // values are rounded to 4 decimals (<= 5e-5), the computed ones stored as
  // floats (<= 1.5e-8). The double sums over 47M pixels add ~1e-11.
  EXPECT_NEAR(d->test.normalization.mean[0], kMnistPixelMean, 5e-5 + 1.5e-8);
  EXPECT_NEAR(d->test.normalization.std[0], kMnistPixelStd, 5e-5 + 1.5e-8);
  EXPECT_EQ(DataFormatOf(o.path), "idx");
}

}  // namespace
}  // namespace fl
