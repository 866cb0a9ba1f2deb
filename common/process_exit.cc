#include "common/process_exit.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace fl {

void ExitWithoutStaticTeardown(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace fl
