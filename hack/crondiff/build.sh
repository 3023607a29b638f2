#!/usr/bin/env bash
# Builds crondiff (the cron oracle of tests/integration/test_cron_differential.py) into a cache
# outside the repository and prints the binary's path.
#
#   hack/crondiff/build.sh               build if needed, print the binary's path last
#   hack/crondiff/build.sh --print-path  print the path without building
#
# The key is a hash of this folder's go.mod, go.sum and Go sources, so a changed main or pin
# builds a new binary beside the old one, and every checkout on the machine shares it. A fresh
# machine builds it with this command: it needs Go and the Go module proxy (or the module cache).
set -euo pipefail

src="$(cd "$(dirname "$0")" && pwd)"
cache="${KUBEMILL_CACHE:-$HOME/.cache/kubemill}"
src_hash="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
bin="$cache/tools/crondiff-$src_hash"

if [[ "${1:-}" == "--print-path" || -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache/tools"
# make and a pytest session may start it at once; the second waits and finds the binary.
exec 9>"$cache/tools/.crondiff.lock"
flock 9
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "crondiff: needs Go >= 1.26 on PATH (and the Go module proxy)" >&2
	exit 1
fi
staging="$(mktemp "$cache/tools/.crondiff-XXXXXX")"
trap 'rm -f "$staging"' EXIT
start=$(date +%s)
(
	cd "$src"
	GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
		go build -trimpath -ldflags "-s -w" -o "$staging" .
)
chmod 755 "$staging"
mv "$staging" "$bin"
trap - EXIT
echo "crondiff: built $bin in $(($(date +%s) - start))s" >&2
echo "$bin"
