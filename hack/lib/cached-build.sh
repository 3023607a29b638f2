# Sourced by the scripts that build a Go tool into kubemill's cache (hack/go-install.sh,
# hack/crondiff/build.sh, hack/helm/build.sh, hack/oidc/build.sh): what they share is here.
#
#   cached_build NAME DIR READY BUILD [--print-path]
#
# DIR is the tool's folder in the cache, keyed by its caller (a version, a hash of its sources);
# READY is the binary in it that the caller prints ("." for the folder itself). When DIR is
# there, its path is printed at once. Otherwise, under a lock (make and a pytest session may
# start a build at once; the second waits and finds it done), BUILD is called with a fresh
# folder to fill, which then becomes DIR in one rename: a folder half built is never taken for
# a built one. Every checkout on the machine shares DIR.

cached_build() {
	local name="$1" dir="$2" ready="$3" build="$4" mode="${5:-}"
	local shown="$dir/$ready"
	[[ "$ready" == "." ]] && shown="$dir"
	if [[ "$mode" == "--print-path" || -e "$dir/$ready" ]]; then
		echo "$shown"
		return 0
	fi
	local tools
	tools="$(dirname "$dir")"
	mkdir -p "$tools"
	exec 9>"$tools/.$name.lock"
	flock 9
	if [[ -e "$dir/$ready" ]]; then
		echo "$shown"
		return 0
	fi
	if ! command -v go >/dev/null; then
		echo "$name: building it needs Go >= 1.26 on PATH (and the Go module proxy)" >&2
		return 1
	fi
	local start
	start=$(date +%s)
	_cached_build_staging="$(mktemp -d "$tools/.$name-XXXXXX")"
	trap 'rm -rf "$_cached_build_staging"' EXIT
	"$build" "$_cached_build_staging"
	chmod 755 "$_cached_build_staging" "$_cached_build_staging"/*
	rm -rf "$dir"
	mv "$_cached_build_staging" "$dir"
	trap - EXIT
	echo "$name: built $dir in $(($(date +%s) - start))s" >&2
	echo "$shown"
}
