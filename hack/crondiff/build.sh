#!/usr/bin/env bash
# Builds crondiff (the cron oracle of tests/integration/test_cron_differential.py) into a cache
# outside the repository and prints the binary's path.
#
#   hack/crondiff/build.sh               build if needed, print the binary's path last
#   hack/crondiff/build.sh --print-path  print the path without building
#
# The key is a hash of this folder's go.mod, go.sum and Go sources, so a changed main or pin
# builds a new binary beside the old one. A fresh machine builds it with this command: it needs
# Go and the Go module proxy (or the module cache).
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
source "$src/../lib/cached-build.sh"

src_hash="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
build() (
	cd "$src"
	GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
		go build -trimpath -ldflags "-s -w" -o "$1/crondiff" .
)
cached_build crondiff "${KUBEMILL_CACHE:-$HOME/.cache/kubemill}/tools/crondiff-$src_hash" crondiff build "${1:-}"
