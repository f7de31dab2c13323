// Which instruction-set level the CPU tile kernels run at (see cpu/vec.h for the levels).
//
// The first use picks the best level this CPU supports, unless LENET_EXT_CPU_ISA names one
// (default | avx2 | avx512). lenet_ext.backends.cpu_isa() reads or changes it through the
// lenet_ext::_set_cpu_isa operator. A level the CPU lacks is refused with an error: running its code
// would stop the process with an illegal instruction.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu/kernels.h"
#include "cpu/settings.h"

namespace lenet_ext {
namespace cpu {
namespace {

constexpr const char* kNames[kLevels] = {"default", "avx2", "avx512"};

bool cpu_supports(Level level) {
#if defined(LENET_EXT_X86_LEVELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();  // (these builtins also check that the OS saves the wider registers)
  switch (level) {
    case Level::kDefault:
      return true;
    case Level::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Level::kAvx512:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return level == Level::kDefault;
#endif
}

std::string supported_names() {
  std::string names;
  for (int l = 0; l < kLevels; ++l) {
    if (cpu_supports(static_cast<Level>(l))) {
      names += names.empty() ? kNames[l] : std::string(", ") + kNames[l];
    }
  }
  return names;
}

const LevelKernels& kernels_of(Level level) {
  TORCH_CHECK(cpu_supports(level), "lenet_ext: this CPU does not support the '", kNames[static_cast<int>(level)],
              "' instruction-set level; it supports: ", supported_names());
  switch (level) {
#ifdef LENET_EXT_X86_LEVELS
    case Level::kAvx2:
      return kernels_avx2();
    case Level::kAvx512:
      return kernels_avx512();
#endif
    default:
      return kernels_default();
  }
}

Level best_level() {
  for (int l = kLevels - 1; l > 0; --l) {
    if (cpu_supports(static_cast<Level>(l))) {
      return static_cast<Level>(l);
    }
  }
  return Level::kDefault;
}

// The level named by LENET_EXT_CPU_ISA, or the best one.
Level initial_level() {
  const char* env = std::getenv("LENET_EXT_CPU_ISA");
  if (env == nullptr || *env == '\0') {
    return best_level();
  }
  for (int l = 0; l < kLevels; ++l) {
    if (std::strcmp(env, kNames[l]) == 0) {
      return static_cast<Level>(l);
    }
  }
  TORCH_CHECK(false, "lenet_ext: LENET_EXT_CPU_ISA must be one of default, avx2, avx512; got '", env, "'");
}

std::atomic<const LevelKernels*>& active() {
  static std::atomic<const LevelKernels*> level{&kernels_of(initial_level())};
  return level;
}

Level checked_level(int64_t level) {
  TORCH_CHECK(level >= 0 && level < kLevels, "lenet_ext: unknown CPU instruction-set level code ", level);
  return static_cast<Level>(level);
}

}  // namespace

const LevelKernels& active_kernels() {
  return *active().load(std::memory_order_relaxed);
}

int64_t set_cpu_isa(int64_t level) {
  const LevelKernels* previous = active().load();
  if (level != -1) {
    active().store(&kernels_of(checked_level(level)));
  }
  return static_cast<int64_t>(previous->level);
}

bool cpu_isa_supported(int64_t level) {
  return cpu_supports(checked_level(level));
}

}  // namespace cpu
}  // namespace lenet_ext
