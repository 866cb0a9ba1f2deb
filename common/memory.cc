#include "common/memory.h"

#include <malloc.h>

namespace fl {

void UseOneMallocArena() { mallopt(M_ARENA_MAX, 1); }

}  // namespace fl
