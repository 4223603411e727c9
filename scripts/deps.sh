#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries and redis-server are installed (and, with the
# argument "test", what the tests also need: JMeter with its HTTP sampler and a JDK for the
# JMeter 2.13 launcher): installs the Debian packages when they are missing and we are root,
# otherwise prints the exact command and fails.
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
if [ "${1:-}" = test ]; then
  # jmeter-http is only a Recommends of jmeter: without it there is no HTTP sampler.
  command -v jmeter >/dev/null || missing+=(jmeter)
  ls /usr/share/jmeter/lib/ext/ApacheJMeter_http*.jar >/dev/null 2>&1 || [ -n "$(ls /opt/*jmeter*/lib/ext/ApacheJMeter_http*.jar 2>/dev/null)" ] || missing+=(jmeter-http)
  command -v javac >/dev/null || missing+=(default-jdk-headless)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

# De-duplicate while keeping order.
read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++' | tr '\n' ' ')"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "deps: missing ${missing[*]}; install with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
