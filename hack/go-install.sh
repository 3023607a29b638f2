#!/usr/bin/env bash
# Builds a Go command at a pinned version from the Go module proxy into a cache outside the
# repository and prints the binary's path (`go install PKG@VERSION`, with GOBIN in the cache).
#
#   hack/go-install.sh github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
#   hack/go-install.sh PKG@VERSION --print-path    the path, without building
#
# The binary goes to $KUBEMILL_CACHE/tools/<name>-<version>/<name>: a new pin builds beside the
# old one and every checkout on the machine shares it. For a command whose module builds with
# `go install` as it is (no replace directives, no link flags it needs); one that needs more has
# a folder of its own with go.mod, like hack/crondiff/, hack/helm/ and hack/oidc/.
set -euo pipefail
source "$(dirname "$0")/lib/cached-build.sh"

spec="${1:?usage: hack/go-install.sh PKG@VERSION [--print-path]}"
pkg="${spec%@*}"
version="${spec##*@}"
if [[ "$pkg" == "$spec" || -z "$version" ]]; then
	echo "go-install: $spec: give the version, as PKG@vX.Y.Z" >&2
	exit 2
fi
name="$(basename "$pkg")"
[[ "$name" =~ ^v[0-9]+$ ]] && name="$(basename "$(dirname "$pkg")")"

build() {
	GOBIN="$1" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
		go install -trimpath -ldflags "-s -w" "$pkg@$version"
}
cached_build "$name" "${KUBEMILL_CACHE:-$HOME/.cache/kubemill}/tools/$name-$version" "$name" build "${2:-}"
