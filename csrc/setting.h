// A process-wide choice among `count` values (0 is the default), kept for a private `_set_*` operator
// (csrc/ops.cpp): set(-1) reads it, set(v) makes it v and returns the previous value. lenet_ext.backends
// wraps each one in a setting users call.
#pragma once

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>

namespace lenet_ext {

class Setting {
 public:
  constexpr Setting(const char* op, int count) : op_(op), count_(count) {}

  int64_t set(int64_t value) {
    TORCH_CHECK(value >= -1 && value < count_, "lenet_ext.", op_, ": expected -1 (read) or 0 to ", count_ - 1,
                ", got ", value);
    return value < 0 ? value_.load() : value_.exchange(static_cast<int>(value));
  }

  int get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> value_{0};
  const char* op_;
  int count_;
};

}  // namespace lenet_ext
