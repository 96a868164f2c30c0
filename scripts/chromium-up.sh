#!/usr/bin/env bash
# chromium-up.sh - the system's headless Chromium and its WebDriver, for the status page's
# browser test (tests/integration/test_status_page.py) and scripts/screenshot_status.py.
#
#   read -r browser driver < <(bash scripts/chromium-up.sh | tail -1)
#
# Debian's `chromium` and `chromium-driver` packages, installed with apt-get when missing (as
# root; otherwise it says what to install). Never a browser downloaded by a test tool: selenium
# is given both paths and does not look for its own. The last line of standard output is
# "<chromium path> <chromedriver path>"; the rest goes to standard error.
set -euo pipefail

log() { echo "[chromium-up] $*" >&2; }
die() { echo "[chromium-up] ERROR: $*" >&2; exit 1; }

find_browser() { command -v chromium || command -v chromium-browser || true; }
find_driver() { command -v chromedriver || { [[ -x /usr/lib/chromium/chromedriver ]] && echo /usr/lib/chromium/chromedriver; } || true; }

browser=$(find_browser)
driver=$(find_driver)
if [[ -z "$browser" || -z "$driver" ]]; then
  [[ $(id -u) -eq 0 ]] || die "chromium / chromium-driver missing and installing them needs root (apt-get install chromium chromium-driver)"
  export DEBIAN_FRONTEND=noninteractive
  # Not `apt-cache policy | grep -q`: under pipefail grep's early exit fails the pipeline.
  candidate=$(apt-cache policy chromium-driver 2>/dev/null || true)
  if [[ ! "$candidate" =~ Candidate:\ [0-9] ]]; then
    log "apt lists lack chromium-driver: running apt-get update"
    apt-get update -qq || die "apt-get update failed"
  fi
  log "installing chromium and chromium-driver with apt-get"
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || die "apt-get install chromium chromium-driver failed"
  browser=$(find_browser)
  driver=$(find_driver)
  [[ -n "$browser" && -n "$driver" ]] || die "chromium or chromedriver still missing after apt-get install"
fi
log "using $browser ($("$browser" --version 2>/dev/null || echo '?')) and $driver"
echo "$browser $driver"
