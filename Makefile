# Everything a developer or CI needs goes through here, from a clone in any folder.
# The virtual environment is this checkout's own (.venv/, an editable install of these files), so
# two clones never test each other's code. It is made by uv (a pinned version, installed once into
# $(CACHE)/tools), whose package cache in $(CACHE)/uv is shared: a second clone's environment
# takes seconds. The stamp is keyed by pyproject.toml, so a changed dependency list rebuilds it.
# Slow one-time builds (control plane, images) live in $(CACHE), keyed by their inputs.
# The test environment (control plane, node agent, S3 server) is a distribution of its own in
# testenv/, installed editable into the same .venv but never into the images.
# `python -P` wherever a module runs from the repository root: the folder operator/ would
# otherwise shadow the standard library's operator module.
SHELL := /bin/bash
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/kubemill
VENV_KEY := $(shell (sed '/^\[tool\.pytest/,$$d' pyproject.toml; cat testenv/pyproject.toml) | sha256sum | cut -c1-12)
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(VENV_KEY)
UV_VERSION := 0.13.9
UV := $(CACHE)/tools/uv-$(UV_VERSION)/bin/uv
export UV_CACHE_DIR := $(CACHE)/uv
# Every script and test finds the caches through this one variable, so `make CACHE=… test` moves
# them all (control plane, images, sandbox), not only the ones a recipe names.
export KUBEMILL_CACHE := $(CACHE)

.PHONY: env test test-unit test-integration test-e2e lint typecheck crds demo bench bench-operator bench-schedule bench-workflow bench-local-workflow clean-env

env: $(STAMP)

$(STAMP): $(UV)
	rm -rf $(VENV)
	$(UV) venv --quiet --seed --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(BIN)/python --editable '.[operator,html,viewer,dev]' --editable ./testenv
	$(BIN)/python -P -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# The whole suite: lint, types, unit, integration (real kernel, real S3), e2e (real control plane).
test: env lint typecheck control-plane images crondiff helm oauth2-proxy browser
	$(BIN)/pytest tests

test-unit: env
	$(BIN)/pytest tests/unit

test-integration: env control-plane images crondiff helm browser
	$(BIN)/pytest tests/integration

test-e2e: env control-plane images helm oauth2-proxy browser
	$(BIN)/pytest tests/e2e

# Besides ruff and hadolint: a module imports the modules of its own folder relatively, so a
# reader or a tool that does not know the package-dir mapping sees which uses which (imports
# across folders are absolute; ruff's TID252 keeps out `..`); and lint-imports checks the import
# contracts in pyproject.toml, from the installed-layout tree below (its working directory goes
# first on sys.path, and the repository root would shadow the standard library's operator).
lint: env layout-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@bad=$$(grep -nE '^\s*(from|import) kubemill\.runner\b' runner/*.py; \
		grep -nE '^\s*(from|import) kubemill\.operator\b' operator/*.py; \
		grep -nE '^\s*(from|import) kubemill\.cli\b' kubemill/cli/*.py; \
		grep -nE '^\s*(from|import) kubemill\.viewer\b' kubemill/viewer/*.py); \
		if [ -n "$$bad" ]; then echo "$$bad"; \
		echo "import modules of the same folder relatively (from .x import y)"; exit 1; fi
	cd $(TYPECHECK_TREE) && $(BIN)/lint-imports --no-logo $(CURDIR)/pyproject.toml
	$(BIN)/hadolint Dockerfile.runner Dockerfile.operator examples/images/Dockerfile.*
	$$(hack/go-install.sh $(ACTIONLINT)) -no-color

# mypy cannot follow setuptools' editable finder for the runner/ -> kubemill.runner mapping, nor
# can import-linter, so both read the packages through a tree of symlinks with the installed
# layout.
TYPECHECK_TREE := build/typecheck
.PHONY: layout-tree
layout-tree:
	@mkdir -p $(TYPECHECK_TREE)/kubemill
	@# Every module of kubemill/ (testing, pytest_plugin, __main__, ...), so a new one is seen.
	@for module in kubemill/*.py; do ln -sfn ../../../$$module $(TYPECHECK_TREE)/$$module; done
	@ln -sfn ../../../kubemill/viewer $(TYPECHECK_TREE)/kubemill/viewer
	@rm -f $(TYPECHECK_TREE)/kubemill/cli.py && ln -sfn ../../../kubemill/cli $(TYPECHECK_TREE)/kubemill/cli
	@ln -sfn ../../../runner $(TYPECHECK_TREE)/kubemill/runner
	@ln -sfn ../../../operator $(TYPECHECK_TREE)/kubemill/operator
	@ln -sfn ../../testenv/kubemill_testenv $(TYPECHECK_TREE)/kubemill_testenv

typecheck: env layout-tree
	MYPYPATH=$(TYPECHECK_TREE) $(BIN)/mypy -p kubemill.cli -m kubemill.testing -m kubemill.pytest_plugin \
		-m kubemill.__main__ -p kubemill.runner -p kubemill.operator -p kubemill.viewer \
		-p kubemill_testenv

# The shared rules (kubemill.operator.schema_rules) are written into the hand-written NotebookRun
# CRD; the NotebookSchedule CRD is generated from it and the cron syntax, the NotebookWorkflow
# CRD from it alone; the admission policies from the runner's rules (kubemill.runner.rules).
# Then all of crds/ is copied into the Helm chart (deploy/helm/kubemill/files/crds).
crds: env
	$(BIN)/python -P hack/sync_run_crd.py
	$(BIN)/python -P hack/gen_workflow_crd.py
	$(BIN)/python -P hack/gen_schedule_crd.py
	$(BIN)/python -P hack/gen_policies.py
	$(BIN)/python -P hack/sync_chart_crds.py

demo: env control-plane images
	$(BIN)/python examples/demo.py

bench: env
	$(BIN)/python benchmarks/bench_runner.py

bench-operator: env control-plane images
	$(BIN)/python benchmarks/bench_operator.py

bench-schedule: env control-plane images
	$(BIN)/python benchmarks/bench_schedule.py

# No image: no pod runs, the benchmark itself plays the runner by writing each step's status.
# First the local one (`kubemill workflow run`), which needs neither control plane nor image.
bench-workflow: env bench-local-workflow control-plane
	$(BIN)/python benchmarks/bench_workflow.py

# `kubemill workflow run` against the same notebooks run one by one with `kubemill run`: about
# 10 minutes on 2 CPUs; `python benchmarks/bench_local_workflow.py -n 1` for a quick look.
bench-local-workflow: env
	$(BIN)/python benchmarks/bench_local_workflow.py

# The viewer's runs index at 100,000 runs in a local folder; `ARGS=--s3-runs 100000` adds a local
# SeaweedFS (writing 300,000 objects into it takes about ten minutes here).
.PHONY: bench-viewer-index
bench-viewer-index: env
	$(BIN)/python benchmarks/bench_viewer_index.py $(ARGS)

# The viewer through `kubemill view` against a local SeaweedFS with 100,000 runs: the runs view,
# a search, a 100,000-object folder, a 5 MB and a 50 MB notebook, each beside the raw S3
# requests it needs. The populated SeaweedFS is kept in $(CACHE)/bench-viewer (writing it takes
# about fifteen minutes; then a run takes a few); `ARGS=--runs 2000` for a quick look.
.PHONY: bench-viewer
bench-viewer: env
	$(BIN)/python benchmarks/bench_viewer.py $(ARGS)

# The release. .github/workflows/release.yml runs these targets and nothing else, so what it
# publishes is what `make images` built and `make test` tested. The version's one source is
# pyproject.toml (hack/release.py: `check`, and `set X.Y.Z` to cut a release).
ACTIONLINT := github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
REGISTRY ?= ghcr.io/kubemill
ARCHES ?= amd64,arm64
DIST ?= dist
.PHONY: release-check push-images publish-manifests dist

# Every file that names the version names pyproject.toml's (and TAG's, v<version>, when given).
release-check:
	$(PYTHON) -P hack/release.py check $(if $(TAG),--tag $(TAG))

# This machine's images, as <REGISTRY>/<name>:<version>-<arch> (log in with buildah first).
push-images: release-check images
	$(BIN)/python -P hack/publish.py --registry $(REGISTRY) push

# One index per image, <REGISTRY>/<name>:<version>, of the ARCHES pushed; digests printed and
# written to build/release/manifest.json.
publish-manifests: release-check env
	$(BIN)/python -P hack/publish.py --registry $(REGISTRY) manifest --arches $(ARCHES)

# The Python package (sdist and wheel) into $(DIST)/.
dist: $(UV) release-check
	rm -rf $(DIST)
	$(UV) build --quiet --out-dir $(DIST)

$(UV):
	rm -rf $(CACHE)/tools/uv-$(UV_VERSION)
	$(PYTHON) -P -m venv $(CACHE)/tools/uv-$(UV_VERSION)
	$(CACHE)/tools/uv-$(UV_VERSION)/bin/pip install --quiet 'uv==$(UV_VERSION)'

clean-env:
	rm -rf $(VENV)

.PHONY: control-plane crondiff helm oauth2-proxy sandbox-up sandbox-down
# The oracle of tests/integration/test_cron_differential.py: CronJob's cron parser (robfig/cron
# at the version Kubernetes pins), built into $(CACHE)/tools/crondiff-<source hash> (a second
# when the Go module cache is warm; the test also builds it when missing).
crondiff:
	hack/crondiff/build.sh >/dev/null

# helm, for the chart's tests (tests/integration/test_helm_chart.py, tests/e2e/test_helm.py):
# built from its Go module (hack/helm/go.mod pins the version) into
# $(CACHE)/tools/helm-<version>-<hash> (88 s with empty Go caches, then instant; not
# hack/go-install.sh: helm's version and Kubernetes version are link flags).
helm:
	hack/helm/build.sh >/dev/null

# The real oauth2-proxy (its Go module, at the version hack/oidc/go.mod pins) and a mockoidc
# server (hack/oidc/main.go) for the viewer's test behind an authenticating proxy
# (tests/e2e/test_viewer_auth.py), built into $(CACHE)/tools/oidc-<source hash> (about two
# minutes cold, none when cached; the test also builds them when missing).
oauth2-proxy:
	hack/oidc/build.sh >/dev/null

# etcd, kube-apiserver, kube-controller-manager and kubectl, built from the Kubernetes Go modules
# into $(CACHE)/k8s (seconds when cached; a few minutes cold). Sources: testenv/k8s.
control-plane:
	testenv/build-control-plane.sh >/dev/null

# The runner and operator images, built with buildah (storage in $(CACHE)/containers) on a base
# made from Debian packages by mmdebstrap, each rebuilt only when its inputs change, then
# unpacked into $(CACHE)/images/store for the node agent (build/images.json says where) and
# written as OCI archives under build/images/ (seconds when nothing changed; minutes cold).
.PHONY: images
images: env
	$(BIN)/python -P hack/images.py

# Debian's Chromium for the viewer's browser tests (Playwright drives it; nothing is downloaded
# from Playwright's servers). Seconds when present.
.PHONY: browser
browser: env
	$(BIN)/python -P -m kubemill_testenv.debian browser

# A local cluster (pods run as processes on this machine) plus S3, left running for kubectl.
sandbox-up: env control-plane images
	$(BIN)/python -P -m kubemill_testenv.sandbox up

sandbox-down: env
	$(BIN)/python -P -m kubemill_testenv.sandbox down
