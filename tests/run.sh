#!/usr/bin/env bash
# README's test command: install what the tests need, then run them. `.ci/run` calls this too.
#   - Debian's redis-server (the bridge tests run against a real Redis), prometheus (the
#     dashboard test evaluates every panel's query in a real Prometheus) and postgresql (the
#     history tests run against a private PostgreSQL server), when missing;
#   - the package with its dev extra (pytest, pytest-xdist, hypothesis, ...);
#   - the fast suite in parallel (pytest-xdist): the unit and process tiers, SHARDEX_TEST_WORKERS
#     workers (default: see below), each test file's tests spread over them. Arguments replace
#     that selection and go to pytest: `bash tests/run.sh tests/chaos` runs the chaos tier
#     (processes killed, stopped, starved of disk, failed over: minutes more, so .ci/run runs
#     it after this command, not every session's loop; `tests/bench` the benches at tiny
#     sizes, likewise), `bash tests/run.sh tests/browser` the
#     web page in headless Chromium (installs Debian's chromium), `bash tests/run.sh tests` everything,
#     `-n 0` serially.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# the coordination contract tests run against a real 3-member etcd cluster (tests/support/etcd.py)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
# the history tests run a private PostgreSQL server (tests/support/postgres.py: initdb, pg_ctl)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
    || need+=(postgresql)
# the browser tier (tests/browser: the web page in a real browser, docs/web.md) drives Debian's
# chromium with its chromium-driver: installed only when that tier is asked for
case " $* " in
    *tests/browser*|*" tests "*|*" tests/ "*)
        command -v chromium >/dev/null 2>&1 || need+=(chromium)
        command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver) ;;
esac
if [ ${#need[@]} -gt 0 ]; then
    # apt's own lines (Get:, Unpacking, Setting up) are the progress of this phase, which can
    # take minutes: shown, not hidden (-q drops only the redrawn progress bar, unreadable in CI)
    echo "installing ${need[*]} (apt-get; this can take a few minutes)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        "${need[@]}"
    echo "installed ${need[*]}"
fi
python3 -m pip install -q -e '.[dev]'
# Bytecode: where PYTHONDONTWRITEBYTECODE=1 is set (this machine sets it), every process the tests
# start (a cluster is 3-6 of them, the suite starts thousands) compiled the package from source
# again: ~0.17 s of CPU each, a third of a process test's CPU. Compiled once here, read by all.
unset PYTHONDONTWRITEBYTECODE
python3 -m compileall -q -j 0 shardex tests bench >/dev/null
# Most tests wait on processes they started (clusters, Redis): serially the suite used ~0.8 of
# 2 cores, so one worker more than the cores keeps them busy (docs/test-suite.md).
workers="${SHARDEX_TEST_WORKERS:-$(( $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1) + 1 ))}"
[ $# -eq 0 ] && set -- tests/unit tests/process  # the fast suite (docs/test-suite.md)
exec python3 -m pytest -q -n "$workers" --dist worksteal "$@"
