#!/usr/bin/env bash
# jmeter.sh: run the installed JMeter with the given arguments, e.g.
#
#   jmeter/jmeter.sh -n -t jmeter/coupon-flash.jmx -l results.jtl -Jhost=127.0.0.1 -Jport=8080
#
# JMeter 3.x and later (e.g. 5.6 from jmeter.apache.org) run as they are. JMeter 2.x, i.e. Debian's
# `jmeter` package (2.13), cannot load any plan as installed (its XStream is too new for it), so
# it runs through launcher/JMeter213Launcher.java, compiled on first use into a cache directory.
#
# Environment: JMETER (the jmeter command, default: jmeter on PATH), JMETER_HOME (its install
# directory, default: found from JMETER), JAVA (default: java on PATH), JAVAC (default: javac),
# JMETER_LAUNCHER_CACHE (where the compiled launcher goes, default: ~/.cache/couponsvc-jmeter).
# Write -J properties as one argument each: -Jname=value.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

jmeter=${JMETER:-$(command -v jmeter || true)}
if [[ -z "$jmeter" ]]; then
	echo "jmeter.sh: jmeter not found: install it (Debian/Ubuntu: apt-get install -y --no-install-recommends jmeter jmeter-http; or JMeter 5.x from https://jmeter.apache.org) or set JMETER=/path/to/bin/jmeter" >&2
	exit 127
fi

jmeter=$(readlink -f "$(command -v "$jmeter")")
# --version writes jmeter.log into the working directory: ask from a scratch one.
scratch=$(mktemp -d)
version=$(cd "$scratch" && "$jmeter" --version 2>&1 | sed -nE 's/^(Version )?([0-9]+\.[0-9]+)[^ ]*$/\2/p' | head -n1 || true)
rm -rf "$scratch"
if [[ "$version" != 2.* ]]; then
	exec "$jmeter" "$@"
fi

# JMeter 2.x.
home=${JMETER_HOME:-}
if [[ -z "$home" ]]; then
	real=$(readlink -f "$jmeter")
	if [[ -f "$(dirname "$real")/ApacheJMeter.jar" ]]; then
		home=$(dirname "$(dirname "$real")") # an unpacked JMeter: HOME/bin/jmeter
	else
		home=/usr/share/jmeter # Debian's /usr/bin/jmeter wrapper
	fi
fi
if [[ ! -f "$home/bin/ApacheJMeter.jar" ]]; then
	echo "jmeter.sh: JMeter $version at $jmeter: $home/bin/ApacheJMeter.jar not found; set JMETER_HOME" >&2
	exit 1
fi

if ! ls "$home"/lib/ext/ApacheJMeter_http*.jar >/dev/null 2>&1; then
	echo "jmeter.sh: JMeter $version has no HTTP sampler ($home/lib/ext/ApacheJMeter_http.jar); Debian: apt-get install -y jmeter-http" >&2
	exit 1
fi
if ! command -v "${JAVAC:-javac}" >/dev/null; then
	echo "jmeter.sh: JMeter $version needs the launcher compiled, and javac is missing; Debian: apt-get install -y default-jdk-headless" >&2
	exit 1
fi

src=$here/launcher/JMeter213Launcher.java
cache=${JMETER_LAUNCHER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/couponsvc-jmeter}
sum=$(cksum <"$src" | cut -d' ' -f1)
build=$cache/launcher-$sum
if [[ ! -f "$build/JMeter213Launcher.class" ]]; then
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	"${JAVAC:-javac}" -nowarn -d "$tmp" "$src"
	mv -T "$tmp" "$build" 2>/dev/null || rm -rf "$tmp" # another run may have won the race
fi

exec "${JAVA:-java}" ${JVM_ARGS:-} -Djmeter.home="$home" \
	-cp "$build:$home/bin/ApacheJMeter.jar:$home/lib/*:$home/lib/ext/*" \
	JMeter213Launcher "$@"
