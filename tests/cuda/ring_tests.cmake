# Device ring tests (included by tests/cuda/CMakeLists.txt), all under mpirun
# at 1 and 2 ranks and labelled cuda_ring. test_device_select and
# test_device_ring_refusals need no GPU (the rank-to-device mapping, the
# agreed --backend cuda refusal, the device ring's refusals) and run
# everywhere; test_cuda_ring, built with the CUDA parts only, needs a CUDA
# device on every rank and skips without one, and then the whole test reads
# Skipped: it prints "Skipped: no CUDA device: ..." when no case ran.
set(_ring_tests test_device_select test_device_ring_refusals)
if(RINGATTN_HAVE_CUDA)
  list(APPEND _ring_tests test_cuda_ring)
endif()
foreach(_t ${_ring_tests})
  add_executable(${_t} ${_t}.cpp ../common/mpi_gtest_main.cpp)
  target_compile_options(${_t} PRIVATE ${RINGATTN_WARNINGS})
  target_link_libraries(${_t} PRIVATE ringattn_lib GTest::gtest)
endforeach()
ringattn_add_mpi_test(test_device_select cuda_device_select 1 2)
ringattn_add_mpi_test(test_device_ring_refusals cuda_ring_refusals 1 2)
foreach(_np 1 2)
  set_property(TEST cuda_device_select_mpi_np${_np} cuda_ring_refusals_mpi_np${_np}
               APPEND PROPERTY LABELS cuda_ring)
endforeach()
if(RINGATTN_HAVE_CUDA)
  ringattn_add_mpi_test(test_cuda_ring cuda_ring 1 2)
  foreach(_np 1 2)
    set_tests_properties(cuda_ring_mpi_np${_np} PROPERTIES
                         SKIP_REGULAR_EXPRESSION "Skipped: no CUDA device: ")
  endforeach()
endif()
