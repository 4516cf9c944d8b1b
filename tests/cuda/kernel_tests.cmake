# Tests of the CUDA fused attention kernel (issue 6). Included by
# tests/cuda/CMakeLists.txt. test_launch_shape runs everywhere (launch
# arithmetic, tile rule, peak table); test_cuda_kernel, built with the CUDA
# parts only, compares the device kernel with the float64 reference and the
# CPU kernel and skips, with a message, where there is no device.
set(_kernel_tests test_launch_shape)
if(RINGATTN_HAVE_CUDA)
  list(APPEND _kernel_tests test_cuda_kernel)
endif()
foreach(_t ${_kernel_tests})
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cpp)
  target_compile_options(${_t} PRIVATE ${RINGATTN_WARNINGS})
  # tests/ for kernel/attn_test_util.hpp (the CPU kernel tests' shared helpers).
  target_include_directories(${_t} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${_t} PRIVATE ringattn_lib GTest::gtest_main)
  gtest_discover_tests(${_t}
    NO_PRETTY_VALUES
    PROPERTIES TIMEOUT 300 LABELS "unit;cuda"
    DISCOVERY_TIMEOUT 60)
endforeach()
