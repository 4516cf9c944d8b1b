# Where a sanitizer or libFuzzer report says a failure happened; sourced by
# replay.sh, and by the fuzz_report_site test that checks it on saved reports.
#
# The crash site is the first stack frame that is not the sanitizer's,
# libFuzzer's, an allocator's or a C string or memory function (ASan
# intercepts strdup, memcpy, strlen, ... in the fuzz binary itself, so the
# frame that called them is the one that matters), nor, for a hang, the
# unnamed libc frame of the signal libFuzzer's timer raised.

# The frames of report $1 from its crash site on, one per line.
site_frames() {
  grep -E '^ +#[0-9]+ ' "$1" |
    grep -vE ' in (__sanitizer|__asan|__ubsan|__lsan|__interceptor_|___interceptor_|fuzzer::)' |
    grep -vE ' in (malloc|calloc|realloc|free|posix_memalign|aligned_alloc|operator new|operator delete|(__)?(mem|str|wcs)[a-z_0-9]*)[ (]' |
    grep -vE '^ +#[0-9]+ 0x[0-9a-f]+ +\(/[^ ]*libc\.so[^ ]*\)'
}

# Prints the first of the extended regular expressions $2.. that the report's
# first 4 site frames match, if any (the crash site itself must match, not a
# caller); fails otherwise.
report_matches_signature() {
  local log=$1 frames sig
  shift
  frames=$(site_frames "$log" | head -4)
  for sig in "$@"; do
    grep -qE -- "$sig" <<<"$frames" && { echo "$sig"; return 0; }
  done
  return 1
}

# Prints the function (or the library, for an unnamed frame) of the crash
# site when it lies inside libhdf5; fails otherwise.
report_site_in_hdf5() {
  local frame
  frame=$(site_frames "$1" | head -1)
  [[ $frame == *libhdf5* ]] || return 1
  sed -E 's/.* in ([^ ]+) .*/\1/; s/^ +#[0-9]+ 0x[0-9a-f]+ +\(([^)]*)\).*/\1/' <<<"$frame"
}
