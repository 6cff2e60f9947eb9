#!/bin/sh
# The browser tests drive Debian's Chromium at /usr/bin/chromium (Playwright's own browser
# download is not used). Install it when missing; when this machine cannot, say why and go
# on: the browser tests then skip with the same reason.
set -u
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: /usr/bin/chromium is missing and there is no apt-get here; browser tests will skip"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "chromium: /usr/bin/chromium is missing and installing it needs root; browser tests will skip"
    exit 0
fi
echo "chromium: installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null; } \
    || echo "chromium: apt-get could not install it; browser tests will skip"
exit 0
