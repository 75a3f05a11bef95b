#include "build_info.hpp"

namespace r3fast {

BuildInfo build_info() {
#if defined(__SANITIZE_ADDRESS__)
  constexpr bool sanitized = true;
#else
  constexpr bool sanitized = false;
#endif
  return BuildInfo{R3FAST_BUILD_FLAGS, R3FAST_COMPILER, sanitized};
}

}  // namespace r3fast
