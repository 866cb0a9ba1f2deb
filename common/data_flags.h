// The data flags every tool takes (--data, --test-data, --test-fraction,
// --label-column, --normalize), so that they read and mean the same
// everywhere. Header-only: CLI11 is a header library, and only the tools'
// main files include this.
#ifndef FEDGE_COMMON_DATA_FLAGS_H_
#define FEDGE_COMMON_DATA_FLAGS_H_

#include <CLI/CLI.hpp>

#include "common/data_loader.h"

namespace fl {

// Adds --test-data, --test-fraction, --label-column and --normalize for `o`
// (--data is each tool's own: its help says what the tool reads from it).
inline void AddDataFormatFlags(CLI::App& app, DataOptions* o) {
  app.add_option("--test-data", o->test_path,
                 "Test split: an IDX folder (its t10k files), a CSV file, or class folders "
                 "(default: the test split of --data)");
  app.add_option("--test-fraction", o->test_fraction,
                 "Hold out this fraction of --data as the test split when it has none (the "
                 "same samples every run)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_option("--label-column", o->label_column,
                 "CSV data: the label column, by header name or 0-based index (default: the "
                 "last column)");
  app.add_option("--normalize", o->normalize,
                 "Input normalisation: mean,std[,mean,std...] (one pair, or one per channel), "
                 "'auto' (computed from the training split; the default) or 'none'");
}

}  // namespace fl

#endif  // FEDGE_COMMON_DATA_FLAGS_H_
