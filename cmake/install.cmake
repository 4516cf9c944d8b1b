# `cmake --install BUILD --prefix PREFIX`: what a cluster user without root
# needs (docs/install.md):
#   bin/ringattn, bin/ringattn-mpirun       the CLI and its mpirun wrapper
#   lib/libringattn.a                      the library (ringattn::ringattn)
#   include/ringattn/<layer>/*.hpp         its headers, as the sources include them
#   lib/cmake/ringattn/                    find_package(ringattn) config
#   share/ringattn/{configs,slurm,datasets,scaling_study,clients}
#   share/ringattn/modulefiles/ringattn/VERSION.lua   an Lmod module file
#   share/doc/ringattn/                    README, docs/, LICENSE, CHANGELOG
include(CMakePackageConfigHelpers)
set(RINGATTN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ringattn)
set(RINGATTN_INSTALL_DATADIR ${CMAKE_INSTALL_DATADIR}/ringattn)

install(TARGETS ringattn_lib EXPORT ringattnTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS ringattn RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${PROJECT_SOURCE_DIR}/launch/ringattn-mpirun DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.cuh")
install(FILES ${PROJECT_BINARY_DIR}/generated/core/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn/core)

install(EXPORT ringattnTargets NAMESPACE ringattn:: DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ringattnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/ringattnConfig.cmake
                              INSTALL_DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ringattnConfig.cmake
              ${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake
        DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})

install(DIRECTORY ${PROJECT_SOURCE_DIR}/configs/ DESTINATION ${RINGATTN_INSTALL_DATADIR}/configs)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/launch/slurm/ DESTINATION ${RINGATTN_INSTALL_DATADIR}/slurm)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/datasets/ DESTINATION ${RINGATTN_INSTALL_DATADIR}/datasets
        USE_SOURCE_PERMISSIONS PATTERN "__pycache__" EXCLUDE)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/launch/scaling_study/
        DESTINATION ${RINGATTN_INSTALL_DATADIR}/scaling_study USE_SOURCE_PERMISSIONS
        PATTERN "__pycache__" EXCLUDE)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/clients/ DESTINATION ${RINGATTN_INSTALL_DATADIR}/clients
        PATTERN "__pycache__" EXCLUDE)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/LICENSE
              ${PROJECT_SOURCE_DIR}/CHANGELOG.md ${PROJECT_SOURCE_DIR}/CITATION.cff
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The module file names the prefix at install time (cmake --install --prefix
# may differ from CMAKE_INSTALL_PREFIX), so it is written then.
install(CODE "
  set(RINGATTN_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(RINGATTN_VERSION \"${PROJECT_VERSION}\")
  set(RINGATTN_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(RINGATTN_DATADIR \"${RINGATTN_INSTALL_DATADIR}\")
  configure_file(\"${PROJECT_SOURCE_DIR}/cmake/ringattn.lua.in\"
                 \"\${CMAKE_INSTALL_PREFIX}/${RINGATTN_INSTALL_DATADIR}/modulefiles/ringattn/${PROJECT_VERSION}.lua\"
                 @ONLY)
  message(STATUS \"Installing: \${CMAKE_INSTALL_PREFIX}/${RINGATTN_INSTALL_DATADIR}/modulefiles/ringattn/${PROJECT_VERSION}.lua\")
")
