#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries, redis-server and nginx (the Ingress stand-in of the
# bench and of the multi-instance tests) are installed (and, with the argument "test", what the
# tests also need: JMeter with its HTTP sampler and a JDK for the JMeter 2.13 launcher, socat,
# Chromium for the Swagger UI browser test, etcd, and the pinned kube-apiserver that
# scripts/kube.sh builds into its cache, with a kubectl for it): installs the Debian packages
# when they are missing and we are root, otherwise prints the exact command and fails.
# nginx-light and etcd-server are installed with a /usr/sbin/policy-rc.d that exits 101, so that
# their packages start no server (nginx would take port 80, etcd 2379; the tests run their own on
# free ports).
set -euo pipefail

missing=()
pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null && command -v postgres >/dev/null && { dirname "$(command -v postgres)"; return 0; }
  return 1
}
pg_bin >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
# As root /usr/sbin is on PATH; look there too for callers whose PATH lacks it.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${1:-}" = test ]; then
  # jmeter-http is only a Recommends of jmeter: without it there is no HTTP sampler.
  command -v jmeter >/dev/null || missing+=(jmeter)
  ls /usr/share/jmeter/lib/ext/ApacheJMeter_http*.jar >/dev/null 2>&1 || [ -n "$(ls /opt/*jmeter*/lib/ext/ApacheJMeter_http*.jar 2>/dev/null)" ] || missing+=(jmeter-http)
  command -v javac >/dev/null || missing+=(default-jdk-headless)
  # The partition fault test cuts an instance's Redis links by freezing socat relays.
  command -v socat >/dev/null || missing+=(socat)
  # The Swagger UI test drives headless Chromium over CDP (swagger_ui_test.go); about 125 MB
  # downloaded without the Recommends, which a headless run does not need.
  command -v chromium >/dev/null || missing+=(chromium)
  # The API server test (k8s/apiserver_test.go) stores the objects in a real etcd.
  command -v etcd >/dev/null || missing+=(etcd-server)
fi

# The pinned kube-apiserver (and kubectl when the machine's is missing or too far from it): built
# once into the cache, a no-op afterwards (6 to 8 minutes cold on 2 cores).
kube() {
  [ "${1:-}" = test ] || return 0
  local d
  d=$(dirname "$0")
  "$d/kube.sh" kube-apiserver >/dev/null
  "$d/kube.sh" kubectl >/dev/null
}
if [ ${#missing[@]} -eq 0 ]; then
  kube "${1:-}"
  exit 0
fi

# De-duplicate while keeping order.
read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++' | tr '\n' ' ')"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  others=() daemons=()
  for p in "${missing[@]}"; do
    case "$p" in
      nginx-light | etcd-server) daemons+=("$p") ;;
      *) others+=("$p") ;;
    esac
  done
  [ ${#others[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${others[@]}" >&2
  if [ ${#daemons[@]} -gt 0 ]; then
    # A policy-rc.d that exits 101 forbids invoke-rc.d to start the service: without it the
    # packages start nginx on port 80 and etcd on 2379. Any policy already there is put back
    # afterwards.
    policy=/usr/sbin/policy-rc.d saved=
    if [ -e "$policy" ]; then saved=$(mktemp /usr/sbin/policy-rc.d.saved.XXXXXX) && mv -f "$policy" "$saved"; fi
    restore() { rm -f "$policy"; [ -z "$saved" ] || mv -f "$saved" "$policy"; }
    trap restore EXIT
    printf '#!/bin/sh\n# scripts/deps.sh: no service starts while %s is installed\nexit 101\n' "${daemons[*]}" >"$policy"
    chmod 755 "$policy"
    apt-get install -y -qq --no-install-recommends "${daemons[@]}" >&2
    restore
    trap - EXIT
  fi
  kube "${1:-}"
else
  echo "deps: missing ${missing[*]}; install with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
