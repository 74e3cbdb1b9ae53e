#!/usr/bin/env bash
# Makes sure Debian's chromium is installed: the status page is tested in a real headless
# browser. Installs it with apt-get when missing (CI and fresh machines run as root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing and this is not root: install it with 'sudo apt-get install chromium'" >&2
  exit 1
fi
echo "installing chromium (Debian package) for the status-page browser test..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium
