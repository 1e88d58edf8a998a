#!/usr/bin/env bash
# Set up casaguard on a fresh machine: a venv in .venv with the package and its
# test extras, and from Debian WSClean (the end-to-end tests run it for real)
# plus libc++, tcmalloc and musl-gcc (the crash corpus dies in them for real).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages the tests run for real: WSClean, and the C++ runtime and
# allocators the crash corpus dies in (LLVM libc++/libc++abi, gperftools tcmalloc,
# musl through musl-gcc).
missing=""
if ! command -v wsclean >/dev/null 2>&1; then missing="wsclean"; fi
for package in libc++1-14 libc++abi1-14 libtcmalloc-minimal4 musl-tools gcc; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $package"
    fi
done
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "setup: installing from Debian:$missing" >&2
    $SUDO apt-get update -q >/dev/null
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" >/dev/null
echo "setup: installing casaguard and its test extras into .venv" >&2
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done ($(.venv/bin/python -c 'import casaguard; print("casaguard", casaguard.__version__)'), $(wsclean --version 2>/dev/null | grep -m1 -o 'WSClean version [0-9.]*'))" >&2
