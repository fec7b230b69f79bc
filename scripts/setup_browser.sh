#!/usr/bin/env bash
# Install Debian's headless Chromium (+ chromedriver, + a CJK font so Chinese text is readable in
# screenshots) for the browser test of generate.py. Idempotent: does nothing when all are installed.
# Needs root (no sudo is assumed); when it cannot install, it says why and exits non-zero, and the
# browser test skips with that reason.
#   bash scripts/setup_browser.sh
set -uo pipefail
PACKAGES=(chromium chromium-driver fonts-wqy-zenhei)
if [ -x /usr/bin/chromium ] && dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
    echo "setup_browser: /usr/bin/chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "setup_browser: not root, cannot apt-get install (install them yourself: apt-get install -y ${PACKAGES[*]})" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "setup_browser: no apt-get on this system; install Chromium so that /usr/bin/chromium exists" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -q >/tmp/setup_browser_apt.log 2>&1; then
    echo "setup_browser: apt-get update failed (see /tmp/setup_browser_apt.log):" >&2
    tail -5 /tmp/setup_browser_apt.log >&2
fi
if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>/tmp/setup_browser_apt.log 2>&1; then
    echo "setup_browser: apt-get install ${PACKAGES[*]} failed (see /tmp/setup_browser_apt.log):" >&2
    tail -5 /tmp/setup_browser_apt.log >&2
    exit 1
fi
echo "setup_browser: installed $(/usr/bin/chromium --version 2>/dev/null)"
