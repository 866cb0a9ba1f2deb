// main() of fedge's test binaries: gtest's own, ending as fedge's programs end
// (common/process_exit.h), so that a binary linked to LibTorch does not spend
// its teardown unregistering operators once its tests are done.
#include <gtest/gtest.h>

#include "common/process_exit.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  fl::ExitWithoutStaticTeardown(RUN_ALL_TESTS());
}
