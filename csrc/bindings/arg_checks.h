// The bindings' argument checks, each in one place: what a Python caller
// passed, checked before anything is posted or computed, raising TypeError
// or ValueError that names the argument.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/dtype.h"
#include "../comm/communicator.h"
#include "buffer.h"

namespace pycomm {
namespace checks {

// A positive number of seconds.
double timeout(double t);
// A known dtype code.
DType dtype_code(int code);
// A known reduction op code.
RedOp op_code(int op);
// A known reduction op; avg only for floating-point dtypes.
RedOp reduce_op(int op, DType dtype);
// An int8 block size: a power of two in [32, 4096].
size_t block_size(long long b);
// An address the kernels may read `width`-byte elements through: a multiple of width.
void aligned(uintptr_t address, size_t width, const char* what);
// b's address is a multiple of its element size.
void aligned(const HostBuffer& b, const char* what);
// b holds `count` elements of `dtype`, aligned.
void buffer(const HostBuffer& b, DType dtype, size_t count, const char* what);
// An int8-compressed op's input: float32, float16 or bfloat16, aligned.
void int8_input(const HostBuffer& x);
// An int8-compressed op's reduction: sum or avg.
RedOp int8_op(int op);
// x and out share no byte.
void no_overlap(const HostBuffer& x, const HostBuffer& out);
// x and out have one dtype.
void same_type(const HostBuffer& x, const HostBuffer& out);
// A GPU op's pointers are device memory of one GPU (an empty tensor may
// have none; a rank without a buffer of a rooted op passes none).
void device_pointers(const CollArgs& a);

}  // namespace checks
}  // namespace pycomm
