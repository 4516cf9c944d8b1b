# Device ring tests (included by tests/cuda/CMakeLists.txt). Both run under
# mpirun at 1 and 2 ranks, labelled cuda_ring. test_device_select needs no
# GPU (the mapping, the agreed --backend cuda refusal); test_cuda_ring runs
# the device ring's refusals everywhere, and its device cases skip with a
# message when a rank has no CUDA device.
add_executable(test_device_select test_device_select.cpp ../common/mpi_gtest_main.cpp)
target_compile_options(test_device_select PRIVATE ${RINGATTN_WARNINGS})
target_link_libraries(test_device_select PRIVATE ringattn_lib GTest::gtest)
ringattn_add_mpi_test(test_device_select cuda_device_select 1 2)
foreach(_np 1 2)
  set_property(TEST cuda_device_select_mpi_np${_np} APPEND PROPERTY LABELS cuda_ring)
endforeach()

# The device ring links the CUDA kernel (src/cuda/kernel.cmake); a CUDA build
# without it cannot link this test.
if(RINGATTN_HAVE_CUDA AND NOT EXISTS ${PROJECT_SOURCE_DIR}/src/cuda/kernel.cmake)
  message(STATUS "test_cuda_ring: not built (no src/cuda/kernel.cmake: no device kernel)")
  return()
endif()
add_executable(test_cuda_ring test_cuda_ring.cpp ../common/mpi_gtest_main.cpp)
target_compile_options(test_cuda_ring PRIVATE ${RINGATTN_WARNINGS})
target_link_libraries(test_cuda_ring PRIVATE ringattn_lib GTest::gtest)
ringattn_add_mpi_test(test_cuda_ring cuda_ring 1 2)
