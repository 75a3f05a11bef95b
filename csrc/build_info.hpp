// What the native module was built with, for `r3fast env`.
#pragma once
#include <string>

namespace r3fast {

struct BuildInfo {
  std::string flags;     // "release -O3" or "asan+ubsan -O1 -g"
  std::string compiler;  // e.g. "GNU 12.2.0"
  bool sanitized;
};

BuildInfo build_info();

}  // namespace r3fast
