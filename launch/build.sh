#!/usr/bin/env bash
# Configures and builds ringattn (Release) into ${BUILD_DIR:-build}. Extra
# arguments go to CMake's configure step, e.g. -DRINGATTN_CUDA=OFF.
# Dependencies outside the system's folders are found through
# CMAKE_PREFIX_PATH (environment or -D), as `module load` sets it.
#
#   BUILD_DIR  build folder (build)
#   JOBS       build jobs (2: the project machines have 2 cores)
#   BUILD_AS   as root: build as this user instead (CI: nobody), the way a
#              cluster user without root builds; the build folder becomes
#              theirs. Ignored when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}
as_user=()
if [[ -n ${BUILD_AS:-} && $(id -u) -eq 0 ]]; then
  drop=(setpriv --reuid="$BUILD_AS" --regid="$(id -gn "$BUILD_AS")" --clear-groups --)
  if "${drop[@]}" test -r "$PWD/CMakeLists.txt"; then
    mkdir -p "$BUILD_DIR/.home"
    chown -R "$BUILD_AS:$(id -gn "$BUILD_AS")" "$BUILD_DIR"
    build_home=$(realpath "$BUILD_DIR")/.home
    if ! "${drop[@]}" test -w "$build_home"; then
      echo "build.sh: $BUILD_AS cannot write $build_home (a folder above it is closed)" >&2
      exit 1
    fi
    # The checkout belongs to root: without safe.directory, git refuses it
    # to another user and the build records its commit as 'unknown'.
    as_user=(env HOME="$build_home" GIT_CONFIG_COUNT=1
      GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$PWD" "${drop[@]}")
    echo "build.sh: building as $BUILD_AS"
  else
    echo "build.sh: $BUILD_AS cannot read $PWD (a folder above it is closed): building as root"
  fi
fi
"${as_user[@]}" cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
"${as_user[@]}" cmake --build "$BUILD_DIR" -j "$JOBS"
