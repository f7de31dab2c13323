// The tile kernels for AVX2 + FMA (16 ymm registers), on x86-64 only. The target is set for this file
// alone, before any header, so nothing compiled here runs unless cpu/dispatch.cpp found AVX2 and FMA.
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define LENET_CPU_LEVEL isa_avx2
#define LENET_CPU_LEVEL_ENUM Level::kAvx2
#define LENET_CPU_LEVEL_SHAPE kAvx2Shape
#define LENET_CPU_LEVEL_NAME "avx2"
#define LENET_CPU_LEVEL_TABLE kernels_avx2
#include "cpu/tiles.h"
#include "cpu/pool2d_tiles.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
