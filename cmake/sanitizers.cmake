# Sanitizer and fuzzing builds (issue 7, "Continuous checks"). Included from
# the top-level CMakeLists.txt before any of our targets is defined, so the
# flags reach every target we build (library, CLI, tests, benchmarks) and
# nothing else: third-party libraries come prebuilt from Debian.
#
# RINGATTN_SANITIZE: AddressSanitizer + UndefinedBehaviorSanitizer, any
#   compiler (gcc or clang). A UB report stops the program
#   (-fno-sanitize-recover), so a test fails instead of printing and passing.
#   launch/run_sanitizers.sh builds build-asan with it and runs the unit and
#   MPI tests.
# RINGATTN_FUZZ: the libFuzzer target tests/fuzz (clang only: gcc has no
#   libFuzzer). Our code is compiled with -fsanitize=fuzzer-no-link (coverage
#   feedback for the fuzzer, no main) plus ASan and UBSan; only the fuzz
#   target links the fuzzer runtime (tests/fuzz/CMakeLists.txt).
#   launch/run_fuzz.sh builds build-fuzz with it.
option(RINGATTN_SANITIZE "Build our code with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(RINGATTN_FUZZ "Build the libFuzzer targets in tests/fuzz (needs clang)" OFF)

set(RINGATTN_SANITIZER_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer
                             -fno-sanitize-recover=undefined)
set(RINGATTN_FUZZ_ENABLED OFF)
if(RINGATTN_FUZZ)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    set(RINGATTN_FUZZ_ENABLED ON)
  else()
    message(WARNING "RINGATTN_FUZZ=ON needs clang (gcc has no libFuzzer); the fuzz targets are "
                    "not built. Configure with CC=clang CXX=clang++ (see launch/run_fuzz.sh).")
  endif()
endif()

if(RINGATTN_SANITIZE OR RINGATTN_FUZZ_ENABLED)
  set(_ringattn_cflags ${RINGATTN_SANITIZER_FLAGS})
  if(RINGATTN_FUZZ_ENABLED)
    list(APPEND _ringattn_cflags -fsanitize=fuzzer-no-link)
  endif()
  # C and C++ only: nvcc would not understand them (CUDA is off in these builds).
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_ringattn_cflags}>")
  add_link_options(${RINGATTN_SANITIZER_FLAGS})
  list(JOIN _ringattn_cflags " " _ringattn_shown)
  message(STATUS "ringattn: sanitizers on for our targets: ${_ringattn_shown}")
endif()
