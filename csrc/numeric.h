// Value rules that the CPU and CUDA kernels share (host-and-device code, so both backends include it).
#pragma once

#include <c10/macros/Macros.h>

#include <limits>

namespace lenet_ext {

// The identity of max: -inf where the type has it, its lowest value otherwise (as torch's max pooling).
template <typename T>
C10_HOST_DEVICE constexpr T lowest() {
  if constexpr (std::numeric_limits<T>::has_infinity) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

}  // namespace lenet_ext
