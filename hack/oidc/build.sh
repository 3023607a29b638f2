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
# go.sum and Go sources, so a changed pin builds a new folder beside the old one. A fresh
# machine builds it with this command (about two minutes on 2 cores): it needs Go and the Go
# module proxy (or the module cache).
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
source "$src/../lib/cached-build.sh"

src_hash="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
build() (
	cd "$src"
	version="$(go list -m -f '{{.Version}}' github.com/oauth2-proxy/oauth2-proxy/v7)"
	export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
	go build -trimpath -ldflags "-s -w" -o "$1/mockoidc-server" .
	go build -trimpath -o "$1/oauth2-proxy" \
		-ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$version" \
		github.com/oauth2-proxy/oauth2-proxy/v7
)
cached_build oidc "${KUBEMILL_CACHE:-$HOME/.cache/kubemill}/tools/oidc-$src_hash" . build "${1:-}"
