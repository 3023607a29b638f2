#!/usr/bin/env bash
# Builds helm (the chart's tests: helm lint, helm template, helm install and upgrade against the
# test control plane) from its Go module into a cache outside the repository, and prints the
# binary's path.
#
#   hack/helm/build.sh               build if needed, print the binary's path last
#   hack/helm/build.sh --print-path  print the path without building
#
# The version is the helm.sh/helm/v3 requirement of go.mod here (its `tool` directive names the
# command); the key is that version plus a hash of go.mod, go.sum and this script (the link
# flags below), so a changed pin builds a new binary beside the old one. A fresh machine builds
# it with this command: it needs Go and the Go module proxy (or the module cache): 90 s on 2
# cores with empty Go caches.
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
source "$src/../lib/cached-build.sh"

version="$(awk '$1 == "helm.sh/helm/v3" { print $2; exit }' "$src/go.mod")"
if [[ -z "$version" ]]; then
	echo "helm: no helm.sh/helm/v3 requirement in $src/go.mod" >&2
	exit 1
fi
src_hash="$(cd "$src" && cat go.mod go.sum build.sh | sha256sum | cut -c1-12)"

build() (
	cd "$src"
	echo "helm: building $version (minutes when the Go caches are empty)" >&2
	export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOMAXPROCS="${GOMAXPROCS:-2}"
	# What helm's own Makefile links in: its version, and the Kubernetes version `helm lint` and
	# `helm template` assume without a cluster (client-go v0.X.Y is Kubernetes 1.X). A plain
	# `go install` (hack/go-install.sh) leaves 1.20 there, and the chart's kubeVersion refuses it.
	client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
	minor="$(cut -d. -f2 <<<"$client_go")"
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
	ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
	done
	go build -trimpath -ldflags "$ldflags" -o "$1/helm" helm.sh/helm/v3/cmd/helm
)
cached_build helm "${KUBEMILL_CACHE:-$HOME/.cache/kubemill}/tools/helm-$version-$src_hash" helm build "${1:-}"
