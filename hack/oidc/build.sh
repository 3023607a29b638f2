#!/usr/bin/env bash
# Builds the real oauth2-proxy and a mockoidc server (main.go here) for the viewer's end-to-end
# test behind an authenticating proxy, into a cache outside the repository, and prints the
# folder holding both binaries (oauth2-proxy, mockoidc-server).
#
#   hack/oidc/build.sh               build if needed, print the folder's path last
#   hack/oidc/build.sh --print-path  print the path without building
#
# oauth2-proxy is built from its Go module at the version go.mod pins (a `tool` directive), with
# the dependency versions this module resolves. The key is a hash of this folder's go.mod,
# go.sum and Go sources, so a changed pin builds a new folder beside the old one, and every
# checkout on the machine shares it. A fresh machine builds it with this command (about two
# minutes on 2 cores): it needs Go and the Go module proxy (or the module cache).
set -euo pipefail

src="$(cd "$(dirname "$0")" && pwd)"
cache="${KUBEMILL_CACHE:-$HOME/.cache/kubemill}"
src_hash="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
out="$cache/tools/oidc-$src_hash"

if [[ "${1:-}" == "--print-path" || -x "$out/oauth2-proxy" ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache/tools"
# make and a pytest session may start it at once; the second waits and finds the binaries.
exec 9>"$cache/tools/.oidc.lock"
flock 9
if [[ -x "$out/oauth2-proxy" ]]; then
	echo "$out"
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "oidc tools: need Go >= 1.26 on PATH (and the Go module proxy)" >&2
	exit 1
fi
staging="$(mktemp -d "$cache/tools/.oidc-XXXXXX")"
trap 'rm -rf "$staging"' EXIT
start=$(date +%s)
version="$(cd "$src" && go list -m -f '{{.Version}}' github.com/oauth2-proxy/oauth2-proxy/v7)"
(
	cd "$src"
	export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
	go build -trimpath -ldflags "-s -w" -o "$staging/mockoidc-server" .
	go build -trimpath -o "$staging/oauth2-proxy" \
		-ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$version" \
		github.com/oauth2-proxy/oauth2-proxy/v7
)
chmod 755 "$staging" "$staging"/*
# The binary checked above goes last: a folder without it is never taken as built.
mv "$staging" "$out"
trap - EXIT
echo "oidc tools: built oauth2-proxy $version and mockoidc-server in $out in $(($(date +%s) - start))s" >&2
echo "$out"
