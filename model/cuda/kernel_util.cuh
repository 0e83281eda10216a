// defines: helpers shared by the .cu files — the grid-stride loop.
#pragma once

#include <cstdint>

// for (i = this thread's first item; i < count; i += all threads of the grid)
#define SX_GRID_STRIDE(i, count)                                                           \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < int64_t(count); \
       i += int64_t(gridDim.x) * blockDim.x)
