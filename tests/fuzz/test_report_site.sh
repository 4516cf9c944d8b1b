#!/usr/bin/env bash
# Checks report_site.sh on saved sanitizer reports: a crash inside HDF5 is
# told from one in our code however many interceptor frames come first.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=report_site.sh
source "$here/report_site.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # check NAME EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; fail=1; fi
}
bin='(/build-fuzz/tests/fuzz/fuzz_input_validation+0x18b305)'
lib='(/lib/x86_64-linux-gnu/libhdf5_openmpi.so.103+0x1895cd)'

# HDF5 strdups an attribute name it never terminated (CI, 2026-12).
cat >"$tmp/strdup_in_hdf5" <<R
==3743==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x60f00005ea10
    #0 0x55c1867ce305 in strdup $bin
    #1 0x7fad8a1895cd in H5MM_strdup $lib
    #2 0x7fad8a1959d0  $lib
    #8 0x7fad8a05d3f8 in H5Aiterate2 $lib
    #9 0x55c1868daaf4 in ringattn::describe_here() /src/io/h5_describe.cpp:324:7
R
check "strdup called by HDF5 is HDF5's" H5MM_strdup "$(report_site_in_hdf5 "$tmp/strdup_in_hdf5")"

# The same interceptor called by our code is ours.
cat >"$tmp/strdup_in_ours" <<R
==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x60f00005ea10
    #0 0x55c1867ce305 in __interceptor_strdup $bin
    #1 0x55c1868daaf4 in ringattn::describe_here() /src/io/h5_describe.cpp:324:7
    #2 0x7fad8a1895cd in H5Aiterate2 $lib
R
report_site_in_hdf5 "$tmp/strdup_in_ours" >/dev/null
check "strdup called by our code is ours" 1 "$?"

# An unnamed frame of libhdf5 at the top: the library is the site.
cat >"$tmp/unnamed" <<R
==1==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000
    #0 0x7fad8a1b9774  $lib
    #1 0x55c1868daaf4 in ringattn::describe_here() /src/io/h5_describe.cpp:324:7
R
check "unnamed libhdf5 frame" /lib/x86_64-linux-gnu/libhdf5_openmpi.so.103+0x1895cd \
  "$(report_site_in_hdf5 "$tmp/unnamed")"

# Known signatures match the crash site's first 4 frames, not a far caller.
cat >"$tmp/accum" <<R
==1==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000
    #0 0x55c1867ce305 in __asan_memcpy $bin
    #1 0x55c1867ce305 in memcpy $bin
    #2 0x7fad8a1895cd in H5F__accum_read $lib
    #3 0x7fad8a1895cd in H5F_block_read $lib
R
check "signature after interceptors" 'in H5F__accum_read' \
  "$(report_matches_signature "$tmp/accum" 'in H5HL_protect' 'in H5F__accum_read')"
cat >"$tmp/far" <<R
==1==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000
    #0 0x55c1868daaf4 in ringattn::a() /src/io/a.cpp:1:1
    #1 0x55c1868daaf4 in ringattn::b() /src/io/a.cpp:2:1
    #2 0x55c1868daaf4 in ringattn::c() /src/io/a.cpp:3:1
    #3 0x55c1868daaf4 in ringattn::d() /src/io/a.cpp:4:1
    #4 0x7fad8a1895cd in H5F__accum_read $lib
R
report_matches_signature "$tmp/far" 'in H5F__accum_read' >/dev/null
check "a signature five frames down does not match" 1 "$?"
report_site_in_hdf5 "$tmp/far" >/dev/null
check "a crash in our code calling HDF5 is ours" 1 "$?"
# libFuzzer's malloc-limit report: its own hooks, ASan's allocator, then the site.
cat >"$tmp/oom" <<R
==1== ERROR: libFuzzer: out-of-memory (malloc(3774873696))
    #0 0x559d8eaf3a91 in __sanitizer_print_stack_trace $bin
    #1 0x559d8ea663e8 in fuzzer::PrintStackTrace() $bin
    #4 0x559d8eafaf17 in __sanitizer::RunMallocHooks(void const*, unsigned long) $bin
    #5 0x559d8ea69614 in __asan::Allocator::Allocate(unsigned long, unsigned long) $bin
    #6 0x559d8ea68f53 in __asan::asan_malloc(unsigned long) $bin
    #7 0x559d8eae9a0d in malloc $bin
    #8 0x7f3005a9127e in H5C_protect $lib
R
check "an oversized malloc in HDF5 is HDF5's" H5C_protect "$(report_site_in_hdf5 "$tmp/oom")"
cat >"$tmp/new_in_ours" <<R
==1== ERROR: libFuzzer: out-of-memory (malloc(3774873696))
    #0 0x559d8eae9a0d in operator new(unsigned long) $bin
    #1 0x55718a32a77d in ringattn::read_offsets() /src/io/input_file.cpp:1:1
    #2 0x7f3005a9127e in H5C_protect $lib
R
report_site_in_hdf5 "$tmp/new_in_ours" >/dev/null
check "operator new called by our code is ours" 1 "$?"
cat >"$tmp/memcpy_overlap" <<R
==1==ERROR: AddressSanitizer: memcpy-param-overlap: memory ranges overlap
    #0 0x55718a1b9c25 in __interceptor_memcpy $bin
    #1 0x7f915996d62c in H5HG_read $lib
R
check "memcpy called by HDF5 is HDF5's" H5HG_read "$(report_site_in_hdf5 "$tmp/memcpy_overlap")"
exit $fail
