// The CPU backend's settings, registered in one place. Settings, not computations: no tensor argument,
// so they are registered for every backend at once. Each lives beside the code that reads it
// (cpu/settings.h says where).
#include <torch/library.h>

#include "cpu/settings.h"

namespace lenet_ext {

TORCH_LIBRARY_IMPL(lenet_ext, CompositeExplicitAutograd, m) {
  m.impl("_set_conv_algorithm", &cpu::set_conv_algorithm);
  m.impl("_set_conv_benchmark", &cpu::set_conv_benchmark);
  m.impl("_set_pool_algorithm", &cpu::set_pool_algorithm);
  m.impl("_set_cpu_isa", &cpu::set_cpu_isa);
  m.impl("_cpu_isa_supported", &cpu::cpu_isa_supported);
  m.impl("_set_huge_pages", &cpu::set_huge_pages);
}

}  // namespace lenet_ext
