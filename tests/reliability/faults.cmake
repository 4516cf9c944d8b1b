# Faults: a rank that hangs (the comm watchdog ends the job, naming the
# peer), a rank that dies, stop signals at chunk boundaries (exit 7) and
# --resume (bit-identical to an uninterrupted run; refused when the input,
# settings or ranks differ). Driven by test_faults.sh, one ctest per case.
foreach(case stop_resume stop_resume_backward stop_refusals signals watchdog_ring watchdog_collective dead_rank
             bad_fault_spec)
  add_test(NAME faults_${case}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_faults.sh $<TARGET_FILE:ringattn>
                   ${CMAKE_CURRENT_BINARY_DIR}/faults ${case})
  set_tests_properties(faults_${case} PROPERTIES TIMEOUT 180 LABELS "reliability;faults"
                       SKIP_RETURN_CODE 77 ENVIRONMENT "${RINGATTN_TEST_ENV}")
endforeach()
