#!/usr/bin/env bash
# Usage: scripts/kube.sh kube-apiserver|kubectl
#
# Prints the path of the Kubernetes command that the API server test in k8s/ runs, building it
# first when needed:
# - kube-apiserver: always the version pinned in scripts/kube/go.mod (k8s.io/kubernetes), built
#   from the Go module proxy into a cache outside the repository,
#   ${XDG_CACHE_HOME:-$HOME/.cache}/couponsvc/kube/<hash of the pin>/, and rebuilt only when the
#   pin (go.mod, go.sum or the build flags below) changes. Cold: 6 to 8 minutes on 2 cores, with
#   a peak of about 1.75 GB (the linker) and 2 GB of Go build cache; cached: instant.
# - kubectl: the one on PATH (the README's commands are run with the user's kubectl), when its
#   minor version is within one of the server's, as kubectl's version skew policy asks; otherwise
#   the pinned one, built the same way (a few more minutes when kube-apiserver was just built).
set -euo pipefail

name=${1:-}
case "$name" in
  kube-apiserver | kubectl) ;;
  *) echo "usage: $0 kube-apiserver|kubectl" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
mod=$root/scripts/kube
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
GO=${GO:-go}

# The pinned release, as the go.mod requires it (v1.32.13): the server's version, set into the
# binaries as upstream's release builds do, so that kubectl's skew check and discovery see it.
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$mod/go.mod")
[[ $version =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || { echo "kube.sh: no 'require k8s.io/kubernetes v1.N.M' line in $mod/go.mod" >&2; exit 1; }
minor=${BASH_REMATCH[1]}

if [ "$name" = kubectl ] && path=$(command -v kubectl 2>/dev/null); then
  client=$("$path" version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
  if [ -n "$client" ] && [ "$client" -ge $((minor - 1)) ] && [ "$client" -le $((minor + 1)) ]; then
    echo "$path"
    exit 0
  fi
  echo "kube.sh: $path is kubectl 1.${client:-?}, not within one minor version of the server ($version): using the pinned kubectl" >&2
fi

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
key=$( { cat "$mod/go.mod" "$mod/go.sum"; echo "$ldflags"; } | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/couponsvc/kube/$key
bin=$cache/$name
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# One build at a time per pin (make test and a go test started by hand may both ask).
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$bin" ]; then
  echo "kube.sh: building $name $version into $cache (cold: 6 to 8 minutes on 2 cores)" >&2
  start=$(date +%s)
  (cd "$mod" && "$GO" build -trimpath -ldflags "$ldflags" -o "$bin.tmp" "k8s.io/kubernetes/cmd/$name")
  mv -f "$bin.tmp" "$bin"
  echo "kube.sh: built $bin in $(($(date +%s) - start)) s" >&2
fi
echo "$bin"
