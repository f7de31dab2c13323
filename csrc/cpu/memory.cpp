// See cpu/memory.h.
#include "cpu/memory.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>
#include <fstream>

#include "cpu/settings.h"
#include "setting.h"

namespace lenet_ext {
namespace cpu {
namespace {

// 0: advise (the default), 1: do not. lenet_ext.backends.huge_pages.
Setting g_huge_pages{"_set_huge_pages", 2};

// The size of a transparent huge page: 2 MiB on x86-64, other sizes on other page tables (0 when the
// kernel has none, so that nothing is advised).
uintptr_t huge_page_bytes() {
  static const uintptr_t bytes = [] {
    std::ifstream f("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    uintptr_t n = 0;
    return (f >> n) && n > 0 && (n & (n - 1)) == 0 ? n : uintptr_t{0};
  }();
  return bytes;
}

}  // namespace

void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = huge_page_bytes();
  const auto bytes = static_cast<uintptr_t>(t.nbytes());
  if (huge == 0 || bytes < 2 * huge || g_huge_pages.get() != 0) {
    return;
  }
  // only the huge pages wholly inside t's bytes: the pages at either end may hold other allocations
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const uintptr_t lo = (begin + huge - 1) & ~(huge - 1);
  const uintptr_t hi = (begin + bytes) & ~(huge - 1);
  if (hi > lo) {
    // a hint: if it fails, the pages stay 4 KiB and the kernel runs as it would have
    (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#else
  (void)t;
#endif
}

int64_t set_huge_pages(int64_t choice) {
  return g_huge_pages.set(choice);
}

}  // namespace cpu
}  // namespace lenet_ext
