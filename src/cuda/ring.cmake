# The device ring: NCCL transport, the ring over the CUDA kernel, and device
# selection. Included by the top-level CMakeLists.txt after the library target
# exists. The rank-to-device mapping and the --backend cuda check are plain
# C++ and MPI, built (and tested) everywhere; the device ring itself only with
# CUDA and NCCL, stubs otherwise. Our .cpp files include cuda_runtime.h and
# nccl.h but contain no device code, so the host compiler builds them with
# the project's full warning set.
target_sources(ringattn_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../comm/device_select.cpp)
if(RINGATTN_HAVE_CUDA)
  target_sources(ringattn_lib PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/../comm/nccl_transport.cpp
    ${CMAKE_CURRENT_LIST_DIR}/ring_cuda.cpp)
else()
  target_sources(ringattn_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/ring_stub.cpp)
endif()
