// The tile kernels at the build's baseline level: SSE2 on x86-64, NEON on aarch64, portable vector
// code elsewhere. Every CPU that runs the extension runs this level.
#define LENET_CPU_LEVEL isa_default
#define LENET_CPU_LEVEL_ENUM Level::kDefault
#define LENET_CPU_LEVEL_SHAPE kDefaultShape
#define LENET_CPU_LEVEL_NAME "default"
#define LENET_CPU_LEVEL_TABLE kernels_default
#include "cpu/tiles.h"
#include "cpu/pool2d_tiles.h"
