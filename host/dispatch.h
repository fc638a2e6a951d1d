// Device dispatch, in one place: HG_ON_DEVICE(device, fn, args...) calls cpu::fn(args...) or
// cuda::fn(args...), for twins with one signature; HG_CUDA(T, fn, args...) calls cuda::fn, of
// type T, where only the GPU has the operation (or takes more arguments). This header and the
// kernels are the only code that knows whether CUDA was compiled in; in a CPU-only build a CUDA
// call reports "built without CUDA" (a UserError).
#pragma once
#include "host/device.h"
#include "kernels/error.h"

namespace handgrad::detail {
template <typename T, typename... Args>
[[noreturn]] T built_without_cuda(const Args&...) {
  throw UserError("this handgrad was built without CUDA: --device cuda is not available");
}
}  // namespace handgrad::detail

#ifdef HANDGRAD_WITH_CUDA
#define HG_ON_DEVICE(device, fn, ...) \
  ((device) == ::handgrad::Device::CPU ? ::handgrad::cpu::fn(__VA_ARGS__) : ::handgrad::cuda::fn(__VA_ARGS__))
#else
#define HG_ON_DEVICE(device, fn, ...)                                     \
  ((device) == ::handgrad::Device::CPU                                    \
       ? ::handgrad::cpu::fn(__VA_ARGS__)                                 \
       : ::handgrad::detail::built_without_cuda<decltype(::handgrad::cpu::fn(__VA_ARGS__))>())
#endif

#ifdef HANDGRAD_WITH_CUDA
#define HG_CUDA(T, fn, ...) static_cast<T>(::handgrad::cuda::fn(__VA_ARGS__))
#else
#define HG_CUDA(T, fn, ...) ::handgrad::detail::built_without_cuda<T>(__VA_ARGS__)
#endif
