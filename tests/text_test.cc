#include "common/text.h"

#include <gtest/gtest.h>

namespace fl {
namespace {

TEST(PrintableTest, EscapesAndTruncates) {
  EXPECT_EQ(Printable("mnist_cnn"), "mnist_cnn");
  EXPECT_EQ(Printable("a\nb\x1b[31m\\"), "a\\x0Ab\\x1B[31m\\x5C");
  EXPECT_EQ(Printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(Printable("\xff\x80"), "\\xFF\\x80");
  EXPECT_EQ(Printable(std::string(100, 'x'), 4), "xxxx...(100 bytes)");
  EXPECT_EQ(Printable(""), "");
}

TEST(SplitListTest, KeepsEmptyFieldsAndNothingMore) {
  EXPECT_EQ(SplitList("cat,dog", ','), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(SplitList("a,,b,", ','), (std::vector<std::string>{"a", "", "b", ""}));
  EXPECT_EQ(SplitList("one", ','), (std::vector<std::string>{"one"}));
  EXPECT_TRUE(SplitList("", ',').empty());
}

}  // namespace
}  // namespace fl
