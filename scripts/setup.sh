#!/usr/bin/env bash
# Set up casaguard on a fresh machine: a venv in .venv with the package and its
# test extras, and WSClean from Debian (the end-to-end tests run it for real).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wsclean >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "setup: installing WSClean from Debian" >&2
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q wsclean >/dev/null
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
