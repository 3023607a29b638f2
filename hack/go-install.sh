#!/usr/bin/env bash
# Builds a Go command at a pinned version from the Go module proxy into a cache outside the
# repository and prints the binary's path (`go install PKG@VERSION`, with GOBIN in the cache).
#
#   hack/go-install.sh github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
#   hack/go-install.sh PKG@VERSION --print-path    the path, without building
#
# The binary goes to $KUBEMILL_CACHE/tools/<name>-<version>/<name>: a new pin builds beside the
# old one and every checkout on the machine shares it. For a command whose module builds with
# `go install` as it is (no replace directives); one that needs a main of our own has a folder
# with go.mod, like hack/crondiff/.
set -euo pipefail

spec="${1:?usage: hack/go-install.sh PKG@VERSION [--print-path]}"
pkg="${spec%@*}"
version="${spec##*@}"
if [[ "$pkg" == "$spec" || -z "$version" ]]; then
	echo "go-install: $spec: give the version, as PKG@vX.Y.Z" >&2
	exit 2
fi
name="$(basename "$pkg")"
[[ "$name" =~ ^v[0-9]+$ ]] && name="$(basename "$(dirname "$pkg")")"
cache="${KUBEMILL_CACHE:-$HOME/.cache/kubemill}"
dir="$cache/tools/$name-$version"
bin="$dir/$name"

if [[ "${2:-}" == "--print-path" || -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache/tools"
# make and a pytest session may start it at once; the second waits and finds the binary.
exec 9>"$cache/tools/.$name.lock"
flock 9
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "go-install: building $name needs Go >= 1.26 on PATH (and the Go module proxy)" >&2
	exit 1
fi
staging="$(mktemp -d "$cache/tools/.$name-XXXXXX")"
trap 'rm -rf "$staging"' EXIT
start=$(date +%s)
GOBIN="$staging" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
	go install -trimpath -ldflags "-s -w" "$pkg@$version"
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
echo "go-install: built $bin in $(($(date +%s) - start))s" >&2
echo "$bin"
