#!/usr/bin/env bash
# Lays out a dependency prefix as a cluster's module or a user's $HOME/deps
# would hold it, from Debian's packages (install_deps.sh installs them):
# libxsmm (headers, static libraries), toml++ (headers, shared library,
# CMake config), CLI11 and nlohmann_json (headers, CMake configs). .ci/run
# builds the release tree against it through CMAKE_PREFIX_PATH, and
# launch_install checks that the build took each of them from there.
#
#   stage_deps_prefix.sh DIR
set -euo pipefail
dir=${1:?usage: stage_deps_prefix.sh DIR}
arch=$(gcc -dumpmachine)
rm -rf "$dir"
mkdir -p "$dir/include" "$dir/lib/$arch/cmake" "$dir/share/cmake"
cp -a /usr/include/CLI /usr/include/nlohmann /usr/include/toml++ "$dir/include/"
cp -a /usr/include/libxsmm /usr/include/libxsmm*.h "$dir/include/"
cp -a /usr/lib/libxsmm.a /usr/lib/libxsmmnoblas.a "$dir/lib/"
cp -a /usr/lib/"$arch"/libtomlplusplus.so* "$dir/lib/$arch/"
cp -a /usr/lib/"$arch"/cmake/tomlplusplus "$dir/lib/$arch/cmake/"
cp -a /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$dir/share/cmake/"
chmod -R a+rX "$dir"
# A build as another user (launch/build.sh's BUILD_AS) must read it: a
# folder above it that is closed would hide it.
if [[ -n ${BUILD_AS:-} && $(id -u) -eq 0 ]] &&
  ! setpriv --reuid="$BUILD_AS" --regid="$(id -gn "$BUILD_AS")" --clear-groups -- test -r "$dir/include/CLI"; then
  echo "stage_deps_prefix.sh: $BUILD_AS cannot read $dir (a folder above it is closed)" >&2
  exit 1
fi
