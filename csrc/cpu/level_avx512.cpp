// The tile kernels for AVX-512 (32 zmm registers), on x86-64 only. The target is set for this file alone,
// before any header, so nothing compiled here runs unless cpu/dispatch.cpp found AVX-512 F/BW/DQ/VL.
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif

#define LENET_CPU_LEVEL isa_avx512
#define LENET_CPU_LEVEL_ENUM Level::kAvx512
#define LENET_CPU_LEVEL_SHAPE kAvx512Shape
#define LENET_CPU_LEVEL_NAME "avx512"
#define LENET_CPU_LEVEL_TABLE kernels_avx512
#include "cpu/tiles.h"
#include "cpu/pool2d_tiles.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
