#!/usr/bin/env bash
# Installs everything the test suite needs, then runs all of it with pytest.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Chromium drives the end-to-end browser tests (Playwright uses it; no browser download), and
# node runs the on-device pipeline's JavaScript against the server's Python (OpenCV.js, DICOM, JPEG).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

python3 -m pip install -q -r requirements-dev.txt
python3 -m pytest "$@"
