#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl of the Kubernetes version
# pinned in hack/k8s/go.mod into a cache outside the repository, and prints the bin directory.
#
#   hack/build-control-plane.sh              build if needed, print the bin directory last
#   hack/build-control-plane.sh --print-dir  print the bin directory without building
#
# The cache key is the Kubernetes version plus a hash of hack/k8s (our mains, go.mod, go.sum),
# so CI and later sessions on the same machine reuse the binaries and a changed main or pin
# builds a new set beside the old one. A fresh machine builds from scratch with this command:
# it needs only Go and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$here/k8s"
cache="${KUBEMILL_CACHE:-$HOME/.cache/kubemill}"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$src/go.mod")"
if [[ -z "$k8s_version" ]]; then
	echo "build-control-plane: no k8s.io/kubernetes requirement in $src/go.mod" >&2
	exit 1
fi
src_hash="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-10)"
out="$cache/k8s/$k8s_version-$src_hash"
bin="$out/bin"
components=(etcd kube-apiserver kube-controller-manager kubectl)

if [[ "${1:-}" == "--print-dir" ]]; then
	echo "$bin"
	exit 0
fi

complete() {
	[[ -x "$bin/kubemill-k8s" ]] || return 1
	local c
	for c in "${components[@]}"; do [[ -x "$bin/$c" ]] || return 1; done
}

if complete; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache/k8s"
# Two builds started at once (make and a pytest session, say) would both spend minutes;
# the second waits for the first and then finds the cache filled.
exec 9>"$cache/k8s/.lock"
flock 9
if complete; then
	echo "$bin"
	exit 0
fi

if ! command -v go >/dev/null; then
	echo "build-control-plane: needs Go >= 1.26 on PATH (and the Go module proxy)" >&2
	exit 1
fi
echo "build-control-plane: building Kubernetes $k8s_version into $out" \
	"(about 5-8 minutes on 2 cores when nothing is cached)" >&2
staging="$(mktemp -d "$cache/k8s/.build-XXXXXX")"
trap 'rm -rf "$staging"' EXIT

# The machine has two cores; more parallelism only adds memory pressure.
export GOMAXPROCS=2
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

pkg=k8s.io/component-base/version
cgo=k8s.io/client-go/pkg/version
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for p in "$pkg" "$cgo"; do
	ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

start=$(date +%s)
(
	cd "$src"
	go mod download
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -v -o "$staging/time.txt" \
			go build -p 2 -trimpath -ldflags "$ldflags" -o "$staging/kubemill-k8s" .
	else
		go build -p 2 -trimpath -ldflags "$ldflags" -o "$staging/kubemill-k8s" .
	fi
)
elapsed=$(($(date +%s) - start))

mkdir -p "$staging/bin"
mv "$staging/kubemill-k8s" "$staging/bin/"
for c in "${components[@]}"; do ln -s kubemill-k8s "$staging/bin/$c"; done
{
	echo "kubernetes $k8s_version"
	echo "etcd $(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$src/go.mod")"
	echo "go $(go env GOVERSION)"
	echo "build_seconds $elapsed"
	if [[ -f "$staging/time.txt" ]]; then
		grep -E 'Maximum resident set size|Elapsed \(wall clock\)' "$staging/time.txt"
	fi
} >"$staging/bin/BUILD-INFO"
rm -f "$staging/time.txt"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
chmod 755 "$staging"
mv "$staging" "$out"
trap - EXIT

echo "build-control-plane: cold build of Kubernetes $k8s_version took ${elapsed}s" >&2
sed 's/^/build-control-plane:   /' "$bin/BUILD-INFO" >&2
echo "$bin"
