# The CUDA fused attention kernel (issue 6). Included by the top-level
# CMakeLists.txt after the library target exists. The launch arithmetic and
# the device peak table are plain C++ and always built (tested on CPUs); the
# kernels only with the CUDA parts.
target_sources(ringattn_lib PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/launch_shape.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_peak.cpp)

if(RINGATTN_HAVE_CUDA)
  # attention_cuda.cpp is host code (C++20, the full warning set); the .cu
  # files are C++17 device code, one translation unit per head-dim tile so
  # that -j2 compiles them side by side.
  target_sources(ringattn_lib PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/attention_cuda.cpp
    ${CMAKE_CURRENT_LIST_DIR}/attention_cuda.cu
    ${CMAKE_CURRENT_LIST_DIR}/attention_kernel_d64.cu
    ${CMAKE_CURRENT_LIST_DIR}/attention_kernel_d128.cu
    ${CMAKE_CURRENT_LIST_DIR}/attention_kernel_d256.cu)
  message(STATUS "  CUDA kernel   : mma.sync f16/bf16 and fp32 FMA paths, head-dim tiles 64, 128, 256")
endif()
