#!/usr/bin/env bash
# promtool-up.sh - the system's promtool, for checking the shipped Prometheus config, rules and
# rule unit tests (tests/unit/test_monitoring_files.py, deploy/prometheus/).
#
#   promtool=$(bash scripts/promtool-up.sh | tail -1)
#
# Debian's `prometheus` package (which ships /usr/bin/promtool), installed with apt-get when
# promtool is missing (as root; otherwise it says what to install). Only promtool is wanted:
# the package's service must not be started by the install, so a policy-rc.d that answers 101
# ("action forbidden") is in place while apt-get runs (invoke-rc.d and deb-systemd-invoke both
# obey it). An existing policy-rc.d that already forbids starting is left untouched; any other
# is put back afterwards. The last line of standard output is the promtool path; the rest goes
# to standard error.
set -euo pipefail

log() { echo "[promtool-up] $*" >&2; }
die() { echo "[promtool-up] ERROR: $*" >&2; exit 1; }

POLICY=/usr/sbin/policy-rc.d
policy_backup=""
policy_created=0

find_promtool() { command -v promtool || { [[ -x /usr/bin/promtool ]] && echo /usr/bin/promtool; } || true; }

restore_policy() {  # idempotent: runs after the install and again from the EXIT trap
  if [[ -n "$policy_backup" ]]; then
    mv -f "$policy_backup" "$POLICY"
  elif [[ $policy_created -eq 1 ]]; then
    rm -f "$POLICY"
  fi
  policy_backup=""
  policy_created=0
}

forbid_service_start() {
  if [[ -e "$POLICY" ]]; then
    local rc=0
    "$POLICY" prometheus start >/dev/null 2>&1 || rc=$?
    if [[ $rc -eq 101 ]]; then
      log "existing $POLICY already forbids starting services; leaving it as is"
      return
    fi
    policy_backup=$(mktemp "$POLICY.promtool-up.XXXXXX")
    cp -p "$POLICY" "$policy_backup"
    log "existing $POLICY allows starting services; replacing it during the install"
  else
    policy_created=1
  fi
  trap restore_policy EXIT
  printf '#!/bin/sh\n# written by scripts/promtool-up.sh for the length of one apt-get install\nexit 101\n' \
    >"$POLICY"
  chmod 755 "$POLICY"
}

promtool=$(find_promtool)
if [[ -z "$promtool" ]]; then
  [[ $(id -u) -eq 0 ]] || die "promtool missing and installing it needs root (apt-get install --no-install-recommends prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  # Not `apt-cache policy | grep -q`: under pipefail grep's early exit fails the pipeline.
  candidate=$(apt-cache policy prometheus 2>/dev/null || true)
  if [[ ! "$candidate" =~ Candidate:\ [0-9] ]]; then
    log "apt lists lack prometheus: running apt-get update"
    apt-get update -qq || die "apt-get update failed"
  fi
  running_before=$(pgrep -x prometheus || true)
  forbid_service_start
  log "installing prometheus (for promtool) with apt-get"
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
  restore_policy
  trap - EXIT
  running_after=$(pgrep -x prometheus || true)
  if [[ -n "$running_after" && "$running_after" != "$running_before" ]]; then
    # Not ours to kill: say so, so that whoever runs this can stop it.
    log "WARNING: a prometheus process is running after the install (pid(s): $running_after)"
  fi
  promtool=$(find_promtool)
  [[ -n "$promtool" ]] || die "promtool still missing after apt-get install prometheus"
fi
log "using $promtool ($("$promtool" --version 2>&1 | head -1 || echo '?'))"
echo "$promtool"
