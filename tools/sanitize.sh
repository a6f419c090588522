#!/usr/bin/env bash
# Build fastnn's kernels with sanitizers and run the test suite under each build.
#
#   tools/sanitize.sh [asan|debug|all] [extra pytest args...]
#
#   asan   AddressSanitizer + UndefinedBehaviorSanitizer (FASTNN_SANITIZE=address,undefined,
#          -O3 kept). Python itself is not instrumented, so libasan is LD_PRELOADed and leak
#          detection is off (CPython keeps memory until exit by design). UBSan reports and
#          continues; the script fails if any "runtime error:" or AddressSanitizer report
#          appears in the log.
#   debug  Cython's checks on (FASTNN_DEBUG=1: boundscheck, wraparound, initializedcheck,
#          -O0 -g): an out-of-bounds memoryview index raises IndexError instead of reading
#          past the buffer.
#   all    both (default).
#
# FASTNN_SANITIZE_REUSE=1 reruns the tests in an existing copy without copying or rebuilding
# (setup.py build_ext then finds everything up to date).
# tests/test_memory.py skips itself under ASan (its quarantine keeps freed memory resident).
#
# Each build happens in its own copy of the committed tree (git archive HEAD; set
# FASTNN_SANITIZE_SOURCE=worktree to copy the working tree, uncommitted files included) under
# ${FASTNN_SANITIZE_DIR:-/tmp/fastnn-sanitize}/<build>, so the in-place build of the checkout is
# never touched. The tests run from that copy (python -m pytest puts it first on sys.path; the
# script checks which fastnn was imported). Default pytest selection: -m "not slow".
# Cost on a 2-core machine: a few minutes per build (both cores); run it on demand, not in a
# loop. Logs: <dir>/<build>.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${FASTNN_SANITIZE_DIR:-/tmp/fastnn-sanitize}"
WHICH="${1:-all}"
shift || true
PYTEST_ARGS=("$@")
if [ ${#PYTEST_ARGS[@]} -eq 0 ]; then
    PYTEST_ARGS=(-q -m "not slow" -p no:cacheprovider)
fi
PY="${PYTHON:-python}"
CC_="${CC:-gcc}"

copy_tree() {  # copy_tree DEST
    local dest="$1"
    rm -rf "$dest"
    mkdir -p "$dest"
    if [ "${FASTNN_SANITIZE_SOURCE:-head}" = "worktree" ]; then
        (cd "$ROOT" && git ls-files -z -co --exclude-standard) \
            | (cd "$ROOT" && rsync -a --from0 --files-from=- ./ "$dest/")
    else
        (cd "$ROOT" && git archive --format=tar HEAD) | tar -x -C "$dest"
    fi
}

check_log() {  # check_log LOG: fail on sanitizer reports
    local log="$1" n_ub n_asan
    n_ub=$(grep -c "runtime error:" "$log" || true)
    n_asan=$(grep -c "ERROR: AddressSanitizer" "$log" || true)
    echo "sanitizer reports: UBSan runtime errors: $n_ub, AddressSanitizer errors: $n_asan"
    if [ "$n_ub" != "0" ] || [ "$n_asan" != "0" ]; then
        grep -n -A12 "runtime error:\|ERROR: AddressSanitizer" "$log" | head -80
        return 1
    fi
}

run_build() {  # run_build NAME
    local name="$1" dest="$OUT/$1" log="$OUT/$1.log" t0 status=0
    t0=$(date +%s)
    if [ "${FASTNN_SANITIZE_REUSE:-0}" = 1 ] && [ -d "$dest/fastnn" ]; then
        echo "== $name: reusing the build in $dest (FASTNN_SANITIZE_REUSE=1)" | tee "$log"
    else
        copy_tree "$dest"
        echo "== $name: building in $dest" | tee "$log"
    fi
    (
        cd "$dest"
        export CC="$CC_"
        if [ "$name" = asan ]; then
            export FASTNN_SANITIZE=address,undefined
        else
            export FASTNN_DEBUG=1
        fi
        "$PY" setup.py build_ext --inplace --build-temp "build/$name" -j 2
    ) >>"$log" 2>&1 || { echo "$name: build failed, see $log"; return 1; }
    echo "== $name: built in $(( $(date +%s) - t0 )) s; running pytest ${PYTEST_ARGS[*]}" \
        | tee -a "$log"
    t0=$(date +%s)
    (
        cd "$dest"
        if [ "$name" = asan ]; then
            # libstdc++ preloaded too: without it ASan's __cxa_throw interceptor finds no real
            # __cxa_throw and aborts the first C++ exception (matplotlib's pybind11 modules)
            LIBASAN="$("$CC_" -print-file-name=libasan.so)"
            LIBSTDCXX="$("$CC_" -print-file-name=libstdc++.so.6)"
            export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
            export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
            export UBSAN_OPTIONS="print_stacktrace=1"
        fi
        "$PY" -c "import fastnn, os, sys; p = os.path.realpath(fastnn.__file__); \
print('fastnn from', p); sys.exit(0 if p.startswith(os.path.realpath('.')) else 1)"
        "$PY" -m pytest tests "${PYTEST_ARGS[@]}"
    ) >>"$log" 2>&1 || status=$?
    echo "== $name: pytest exit status $status after $(( $(date +%s) - t0 )) s" | tee -a "$log"
    tail -3 "$log" | grep -E "passed|failed|error" || true
    check_log "$log" || status=1
    return $status
}

mkdir -p "$OUT"
rc=0
case "$WHICH" in
    asan) run_build asan || rc=1 ;;
    debug) run_build debug || rc=1 ;;
    all) run_build asan || rc=1; run_build debug || rc=1 ;;
    *) echo "usage: $0 [asan|debug|all] [pytest args...]"; exit 2 ;;
esac
exit $rc
