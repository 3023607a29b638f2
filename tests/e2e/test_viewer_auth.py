"""The viewer's authentication and authorization against a real API server.

Two namespaces, A and B, each with a ServiceAccount and a person (a User, as an OIDC login
through a proxy would name them) bound to a Role that may get NotebookRuns there, and a
cluster-wide reader. The viewer asks the API server with the credentials of its own
ServiceAccount, bound to the ClusterRole of deploy/components/viewer, so these tests also
show that that RBAC is enough. Tokens are real ServiceAccount tokens, checked by TokenReview.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kubernetes import client
from playwright.sync_api import Browser, Page, sync_playwright

from kubemill.viewer.kubeapi import KubeReviews
from kubemill.viewer.settings import ViewerSettings
from kubemill_testenv import kube
from kubemill_testenv.controlplane import REPO_ROOT, free_port
from kubemill_testenv.debian import chromium
from kubemill_testenv.kubeconfig import api_client, mint_service_account_kubeconfig
from kubemill_testenv.procs import spawn, wait_until
from tests.integration.helpers import wait_for_line
from tests.integration.viewer_server import LiveViewer, Reply, live_viewer

from .conftest import Cluster, create_namespace

pytestmark = pytest.mark.e2e

#: The address the viewer trusts as its proxy; the tests' own requests come from 127.0.0.1.
PROXY_ADDRESS = "127.0.0.2"
#: How long the API server's authorizer may take to see new Roles and bindings.
AUTHORIZER_TIMEOUT = 20
VIEWER_NAMESPACE = "kubemill-system"


@dataclass(frozen=True)
class World:
    viewer: LiveViewer
    a: str
    b: str
    #: Bearer tokens: the ServiceAccount of A, of B, a cluster-wide reader, one bound to nothing.
    alice: str
    bob: str
    root: str
    nobody: str

    def get(self, path: str, token: str | None = None, **headers: str) -> Reply:
        sent = dict(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return self.viewer.get(path, sent)

    def runs(self, token: str) -> dict[str, Any]:
        reply = self.get("/api/runs", token)
        assert reply.status == 200, reply.text
        result: dict[str, Any] = json.loads(reply.body)
        return result


def _notebook(marker: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {marker}"))
    return str(nbformat.writes(nb))


def _run_folder(root: Path, folder: str, namespace: str | None, marker: str) -> None:
    where = root / folder
    where.mkdir(parents=True)
    identity = {
        "name": folder.rsplit("/", 1)[-1],
        **({"namespace": namespace} if namespace else {}),
    }
    (where / "run.json").write_text(
        json.dumps({"status": "Succeeded", "identity": identity, "parameters": {"m": marker}})
    )
    (where / "output.ipynb").write_text(_notebook(marker))


def _apply(cluster: Cluster, documents: list[dict[str, Any]]) -> None:
    subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "apply",
         "--server-side", "-f", "-"],
        input="\n".join(json.dumps(d) for d in documents), text=True, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip


def _token(api: client.ApiClient, namespace: str, name: str) -> str:
    answer = kube.request(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    return str(answer["status"]["token"])


RUNS = {"group": "kubemill.dev", "resource": "notebookruns", "verb": "get"}
REVIEWS = {"group": "authorization.k8s.io", "resource": "subjectaccessreviews", "verb": "create"}


def _allowed(
    api: client.ApiClient,
    user: str,
    namespace: str,
    groups: list[str],
    attributes: dict[str, str] = RUNS,
) -> bool:
    answer = kube.request(
        api,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {"namespace": namespace, **attributes},
            },
        },
    )
    return bool(answer["status"].get("allowed"))


def _viewer_rbac(cluster: Cluster) -> None:
    """The viewer's ServiceAccount and RBAC exactly as the kustomize component has them."""
    built = subprocess.run(
        [cluster.kubectl_path, "kustomize", str(REPO_ROOT / "deploy/overlays/viewer")],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    import yaml

    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    documents = [
        d
        for d in yaml.safe_load_all(built)
        if d and d["kind"] in wanted and d["metadata"]["name"] == "kubemill-viewer"
    ]
    assert len(documents) == 3, documents
    _apply(cluster, documents)


@dataclass(frozen=True)
class Setup:
    """What the viewers of this module serve and ask: the store, the namespaces, the tokens,
    and the API server's reviews with the viewer's own ServiceAccount's credentials."""

    store: Path
    a: str
    b: str
    tokens: dict[str, str]
    reviews: KubeReviews
    #: The viewer's ServiceAccount's kubeconfig, as a pod would have its credentials.
    kubeconfig: Path


@pytest.fixture(scope="module")
def setup(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    suffix = secrets.token_hex(3)
    a, b = f"e2e-viewer-a-{suffix}", f"e2e-viewer-b-{suffix}"
    with api_client(cluster.kubeconfig) as api:
        for namespace in (a, b):
            create_namespace(api, namespace)
        found = kube.request(
            api, "GET", "/api/v1/namespaces",
            query={"fieldSelector": f"metadata.name={VIEWER_NAMESPACE}"},
        )  # fmt: skip
        if not found["items"]:
            create_namespace(api, VIEWER_NAMESPACE)
        _viewer_rbac(cluster)
        reader = f"e2e-viewer-root-{suffix}"
        documents: list[dict[str, Any]] = []
        for namespace, person in ((a, "ada@example.com"), (b, "bert@example.com")):
            documents += [
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "reader", "namespace": namespace}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "runs-reader", "namespace": namespace},
                 "rules": [{"apiGroups": ["kubemill.dev"], "resources": ["notebookruns"],
                            "verbs": ["get", "list"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "runs-reader", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "runs-reader"},
                 "subjects": [
                     {"kind": "ServiceAccount", "name": "reader", "namespace": namespace},
                     {"kind": "User", "name": person, "apiGroup": "rbac.authorization.k8s.io"},
                 ]},
            ]  # fmt: skip
        documents += [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "root-reader", "namespace": a}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "nobody", "namespace": a}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": reader},
             "rules": [{"apiGroups": ["kubemill.dev"], "resources": ["notebookruns"],
                        "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": reader},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": reader},
             "subjects": [{"kind": "ServiceAccount", "name": "root-reader", "namespace": a}]},
        ]  # fmt: skip
        _apply(cluster, documents)
        # Decisions are cached for a TTL: ask only once the authorizer sees every binding.
        expected = [
            (f"system:serviceaccount:{a}:reader", a, ["system:serviceaccounts"]),
            (f"system:serviceaccount:{b}:reader", b, ["system:serviceaccounts"]),
            ("ada@example.com", a, []),
            ("bert@example.com", b, []),
            (f"system:serviceaccount:{a}:root-reader", "", ["system:serviceaccounts"]),
        ]
        wait_until(
            lambda: _allowed(
                api, f"system:serviceaccount:{VIEWER_NAMESPACE}:kubemill-viewer", "",
                ["system:serviceaccounts"], REVIEWS,
            ),
            AUTHORIZER_TIMEOUT,
            "the authorizer to let the viewer create SubjectAccessReviews",
            interval=0.2,
        )  # fmt: skip
        for user, namespace, groups in expected:
            wait_until(
                lambda u=user, n=namespace, g=groups: _allowed(api, u, n, g),  # type: ignore[misc]
                AUTHORIZER_TIMEOUT,
                f"the authorizer to let {user} get notebookruns in {namespace or 'all namespaces'}",
                interval=0.2,
            )
        tokens = {
            "alice": _token(api, a, "reader"),
            "bob": _token(api, b, "reader"),
            "root": _token(api, a, "root-reader"),
            "nobody": _token(api, a, "nobody"),
        }
        viewer_config = mint_service_account_kubeconfig(
            api, cluster.kubeconfig, VIEWER_NAMESPACE, "kubemill-viewer",
            tmp_path_factory.mktemp("viewer") / "viewer.kubeconfig",
        )  # fmt: skip

    store = tmp_path_factory.mktemp("store")
    _run_folder(store, f"{a}/daily", a, "alpha-report")
    _run_folder(store, f"{a}/weekly", a, "alpha-weekly")
    _run_folder(store, f"{b}/daily", b, "bravo-report")
    _run_folder(store, "local/try", None, "local-run")
    # A run in progress: its notebook checkpointed, no run.json yet, so no namespace recorded.
    (store / a / "running").mkdir()
    (store / a / "running" / "output.ipynb").write_text(_notebook("alpha-running"))
    (store / "loose.txt").write_text("not in any run folder")
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(str(viewer_config), client_configuration=configuration)
    reviews = KubeReviews(configuration)
    try:
        yield Setup(store, a, b, tokens, reviews, viewer_config)
    finally:
        reviews.close()
        with api_client(cluster.kubeconfig) as api:
            for namespace in (a, b):
                kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
            for kind in ("clusterroles", "clusterrolebindings"):
                kube.request(api, "DELETE", f"/apis/rbac.authorization.k8s.io/v1/{kind}/{reader}")


def _fetch(url: str, token: str | None) -> tuple[int, bytes]:
    """GET `url` as the bearer of `token` (anonymous when None): status and body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def _runs(base: str, token: str | None) -> tuple[int, list[str]]:
    """The run folders /api/runs shows the bearer of `token`."""
    status, body = _fetch(base + "/api/runs", token)
    return status, sorted(r["folder"] for r in json.loads(body)["runs"]) if status == 200 else []


@contextmanager
def serving(
    setup: Setup,
    cache: Path,
    modes: tuple[str, ...],
    proxies: tuple[str, ...],
    probe: dict[str, str],
    *,
    namespace_from_path: bool = False,
) -> Iterator[LiveViewer]:
    """A viewer of the store, once its first runs index is built (asked with `probe`'s
    headers: /api/runs answers 503 until then)."""
    settings = ViewerSettings(
        root=str(setup.store),
        cache_dir=cache,
        auth_modes=modes,
        trusted_proxies=proxies,
        refresh_seconds=3600,
        namespace_from_path=namespace_from_path,
    )
    with live_viewer(settings, reviews=setup.reviews) as viewer:
        wait_until(
            lambda: viewer.get("/api/runs", probe).status != 503,
            60,
            "the viewer's first runs index",
            interval=0.1,
        )
        yield viewer


@pytest.fixture(scope="module")
def world(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A viewer taking tokens, and proxy headers from PROXY_ADDRESS only."""
    root = {"Authorization": f"Bearer {setup.tokens['root']}"}
    with serving(
        setup,
        tmp_path_factory.mktemp("cache"),
        ("proxy", "token"),
        (f"{PROXY_ADDRESS}/32",),
        root,
    ) as viewer:
        t = setup.tokens
        yield World(viewer, setup.a, setup.b, t["alice"], t["bob"], t["root"], t["nobody"])


@pytest.mark.parametrize(
    "path", ["/tree/", "/runs", "/api/runs", "/api/contents/", "/view/x/output.ipynb"]
)
def test_an_unauthenticated_request_is_401(world: World, path: str) -> None:
    reply = world.get(path)
    assert reply.status == 401, reply.text
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="kubemill"'
    assert "authentication required" in reply.text
    assert world.get("/healthz").status == 200


def test_a_token_the_api_server_does_not_know_is_401(world: World) -> None:
    reply = world.get("/tree/", world.alice[:-4] + "AAAA")
    assert reply.status == 401
    assert "not valid" in reply.text


def test_a_user_of_a_reads_as_notebooks_but_not_bs_whether_they_exist_or_not(
    world: World,
) -> None:
    a, b = world.a, world.b
    page = world.get(f"/view/{a}/daily/output.ipynb", world.alice)
    assert page.status == 200, page.text
    assert "alpha-report" in page.text
    assert world.get(f"/files/{a}/daily/output.ipynb", world.alice).status == 200

    answers = {}
    for path in (
        f"{b}/daily/output.ipynb",  # exists
        f"{b}/daily/nothing.ipynb",  # in B's run folder, missing
        f"{b}/nothing/output.ipynb",  # under B's folder, missing
        f"{b}",
        "loose.txt",  # outside every run folder: cluster-wide readers only
        "no-such-folder/x.ipynb",
    ):
        for route in ("view", "files", "tree", "api/contents"):
            reply = world.get(f"/{route}/{path}", world.alice)
            assert reply.status == 403, (route, path, reply.status, reply.text)
            answers[(route, path)] = reply.text.replace(path, "PATH")
    # The same words for what exists and what does not: the answer tells nothing.
    for route in ("view", "files", "tree"):
        assert (
            answers[(route, f"{b}/daily/output.ipynb")]
            == answers[(route, f"{b}/daily/nothing.ipynb")]
        )
        assert (
            answers[(route, f"{b}/daily/output.ipynb")]
            == answers[(route, "no-such-folder/x.ipynb")]
        )
    assert json.loads(world.get(f"/api/contents/{b}/daily/output.ipynb", world.alice).body)[
        "message"
    ].endswith("they may get")

    # B's person reads B's notebook, and the cluster-wide reader reads everything, with the
    # usual 404 for what is missing.
    assert world.get(f"/view/{b}/daily/output.ipynb", world.bob).status == 200
    assert world.get(f"/view/{a}/daily/output.ipynb", world.bob).status == 403
    assert world.get("/files/loose.txt", world.root).status == 200
    assert world.get(f"/view/{b}/daily/nothing.ipynb", world.root).status == 404
    # Authenticated, bound to nothing: nothing but the (empty) root.
    assert world.get(f"/view/{a}/daily/output.ipynb", world.nobody).status == 403
    assert world.get("/tree/", world.nobody).status == 200


def test_a_forged_proxy_header_from_another_address_is_refused(world: World) -> None:
    a = world.a
    path = f"/view/{a}/daily/output.ipynb"
    # From 127.0.0.1, which is not the proxy: refused, with or without a valid token.
    for headers in (
        {"X-Forwarded-Email": "ada@example.com"},
        {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "system:masters"},
        {"X-Auth-Request-Email": "ada@example.com"},
    ):
        reply = world.get(path, None, **headers)
        assert reply.status == 403, reply.text
        assert "accepted only from the viewer's authenticating proxy" in unescape(reply.text)
        assert world.get(path, world.alice, **headers).status == 403
    # The same header from the proxy's address is who the proxy says.
    via_proxy = world.viewer.get(
        path, {"X-Forwarded-Email": "ada@example.com"}, source=PROXY_ADDRESS
    )
    assert via_proxy.status == 200, via_proxy.text
    bert = world.viewer.get(path, {"X-Forwarded-Email": "bert@example.com"}, source=PROXY_ADDRESS)
    assert bert.status == 403
    # The proxy's address alone names nobody.
    assert world.viewer.get(path, source=PROXY_ADDRESS).status == 401


def test_the_runs_view_shows_only_the_namespaces_one_may_read(world: World) -> None:
    a, b = world.a, world.b

    def seen(token: str) -> tuple[list[tuple[str, str | None]], list[str]]:
        page = world.runs(token)
        runs = sorted((r["folder"], r["namespace"]) for r in page["runs"])
        facets = sorted(f["value"] for f in page["facets"]["namespace"])
        return runs, facets

    assert seen(world.alice) == ([(f"{a}/daily", a), (f"{a}/weekly", a)], [a])
    assert seen(world.bob) == ([(f"{b}/daily", b)], [b])
    assert seen(world.nobody) == ([], [])
    everything, namespaces = seen(world.root)
    assert everything == sorted(
        [
            (f"{a}/daily", a),
            (f"{a}/weekly", a),
            (f"{b}/daily", b),
            ("local/try", None),
            (f"{a}/running", None),
        ]
    )
    assert namespaces == sorted([a, b])
    # Asking for B's runs by name shows nothing either, and the HTML page agrees.
    assert world.runs(world.alice) != world.runs(world.bob)
    filtered = world.get(f"/api/runs?namespace={b}", world.alice)
    assert json.loads(filtered.body)["total"] == 0
    html = world.get("/runs", world.alice).text
    assert "alpha-report" in html and "bravo-report" not in html


def test_folder_listings_hide_what_one_may_not_read(world: World) -> None:
    a, b = world.a, world.b

    def listed(path: str, token: str) -> list[str]:
        reply = world.get(f"/api/contents/{path}?content=1", token)
        assert reply.status == 200, reply.text
        return sorted(e["name"] for e in json.loads(reply.body)["content"])

    def tree(path: str, token: str) -> str:
        reply = world.get(f"/tree/{path}", token)
        assert reply.status == 200, reply.text
        return reply.text

    root = tree("", world.alice)
    assert f"{a}/" in root and f"{b}/" not in root and "loose.txt" not in root
    assert "local/" not in root
    assert "1 entries" in root
    bobs = tree("", world.bob)
    assert f"{b}/" in bobs and f"{a}/" not in bobs
    # The run in progress names no namespace yet: by the index alone, cluster-wide only.
    assert listed(a, world.alice) == ["daily", "weekly"]
    assert listed(a, world.root) == ["daily", "running", "weekly"]
    assert world.get(f"/view/{a}/running/output.ipynb", world.alice).status == 403
    assert listed(f"{a}/daily", world.alice) == ["output.ipynb", "run.json"]
    everything = tree("", world.root)
    assert all(name in everything for name in (f"{a}/", f"{b}/", "local/", "loose.txt"))


# --- behind the real oauth2-proxy, logged in through a real browser --------------------------

OIDC_BUILD = REPO_ROOT / "hack" / "oidc" / "build.sh"
SHOTS = REPO_ROOT / "out" / "screenshots"
#: How long oauth2-proxy and mockoidc may take to start listening.
START_TIMEOUT = 30


@pytest.fixture(scope="module")
def oidc_tools() -> Path:
    """The folder with oauth2-proxy and mockoidc-server (`make oauth2-proxy` builds them)."""
    done = subprocess.run([str(OIDC_BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{OIDC_BUILD} failed (it needs Go and the Go module proxy):\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def proxied(
    setup: Setup, oidc_tools: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """oauth2-proxy in front of a viewer in proxy mode, as a sidecar would be: the viewer
    trusts only the proxy's address (127.0.0.1 here), with mockoidc as the OpenID provider.
    Yields the proxy's URL and mockoidc's."""
    logs = tmp_path_factory.mktemp("oidc")
    oidc_port, proxy_port = free_port(), free_port()
    oidc_url = f"http://127.0.0.1:{oidc_port}"
    mock = spawn(
        "mockoidc",
        [str(oidc_tools / "mockoidc-server"), "-listen", f"127.0.0.1:{oidc_port}"],
        log_path=logs / "mockoidc.log",
    )
    try:
        wait_until(
            lambda: '"issuer"' in (logs / "mockoidc.log").read_text(),
            START_TIMEOUT,
            "mockoidc to listen",
            check=mock,
        )
        first = (logs / "mockoidc.log").read_text().splitlines()[0]
        oidc = json.loads(first)
        ada = {"X-Forwarded-Email": "ada@example.com"}
        with serving(
            setup,
            tmp_path_factory.mktemp("cache"),
            ("proxy",),
            ("127.0.0.1/32",),
            ada,
            namespace_from_path=True,
        ) as viewer:
            proxy_url = f"http://127.0.0.1:{proxy_port}"
            proxy = spawn(
                "oauth2-proxy",
                [
                    str(oidc_tools / "oauth2-proxy"),
                    "--provider=oidc",
                    f"--oidc-issuer-url={oidc['issuer']}",
                    f"--client-id={oidc['clientID']}",
                    f"--client-secret={oidc['clientSecret']}",
                    "--scope=openid email profile groups",
                    f"--http-address=127.0.0.1:{proxy_port}",
                    f"--redirect-url={proxy_url}/oauth2/callback",
                    f"--upstream=http://127.0.0.1:{viewer.port}/",
                    "--email-domain=*",
                    "--cookie-secret=" + secrets.token_hex(16),
                    "--cookie-secure=false",
                    "--skip-provider-button=true",
                    "--pass-user-headers=true",
                ],
                log_path=logs / "oauth2-proxy.log",
            )
            try:
                wait_until(
                    lambda: _answers(f"{proxy_url}/ping"),
                    START_TIMEOUT,
                    "oauth2-proxy to listen",
                    interval=0.1,
                    check=proxy,
                )
                yield proxy_url, oidc_url
            finally:
                proxy.stop()
    finally:
        mock.stop()


def _log_in_as(browser: Browser, proxy_url: str, oidc_url: str, name: str) -> Page:
    """A fresh browser whose first visit goes through oauth2-proxy's login as `name`."""
    request = urllib.request.Request(f"{oidc_url}/kubemill/next-user?name={name}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    page = browser.new_context().new_page()
    reply = page.goto(f"{proxy_url}/runs")
    assert reply is not None and reply.status == 200, (reply and reply.status, page.content())
    assert page.url == f"{proxy_url}/runs", page.url
    return page


def test_behind_oauth2_proxy_each_person_sees_their_namespace(
    setup: Setup, proxied: tuple[str, str]
) -> None:
    proxy_url, oidc_url = proxied
    a, b = setup.a, setup.b
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            # Nobody logged in: oauth2-proxy sends the client to the provider, never through.
            connection = http.client.HTTPConnection("127.0.0.1", int(proxy_url.rsplit(":", 1)[1]))
            try:
                connection.request("GET", "/api/runs")
                anonymous = connection.getresponse()
                anonymous.read()
            finally:
                connection.close()
            assert anonymous.status in (302, 401, 403), anonymous.status
            assert (anonymous.getheader("Location") or "").startswith((oidc_url, "/oauth2/"))

            for person, mine, theirs, marker, other in (
                ("ada", a, b, "alpha-report", "bravo-report"),
                ("bert", b, a, "bravo-report", "alpha-report"),
            ):
                page = _log_in_as(browser, proxy_url, oidc_url, person)
                runs = page.locator("main").inner_text()
                assert mine in runs and theirs not in runs, runs
                assert marker in runs and other not in runs, runs
                page.screenshot(path=str(SHOTS / f"viewer-oauth2-proxy-{person}.png"))

                opened = page.goto(f"{proxy_url}/view/{mine}/daily/output.ipynb")
                assert opened is not None and opened.status == 200
                assert marker in page.content()
                for path in (f"{theirs}/daily/output.ipynb", f"{theirs}/daily/nothing.ipynb"):
                    denied = page.goto(f"{proxy_url}/view/{path}")
                    assert denied is not None and denied.status == 403, path
                    assert "may not read" in page.content()

                listed = page.goto(f"{proxy_url}/tree/")
                assert listed is not None and listed.status == 200
                folder = page.locator("main").inner_text()
                assert f"{mine}/" in folder and f"{theirs}/" not in folder, folder
                assert "loose.txt" not in folder

                # With namespace_from_path, A's run in progress is A's by its place.
                running = page.goto(f"{proxy_url}/view/{a}/running/output.ipynb")
                assert running is not None
                assert running.status == (200 if person == "ada" else 403)
                inside = page.goto(f"{proxy_url}/tree/{a}/")
                assert inside is not None
                if person == "ada":
                    assert "running/" in page.locator("main").inner_text()
                else:
                    assert inside.status == 403
                page.context.close()
        finally:
            browser.close()


def test_kubemill_viewer_serves_from_its_environment(setup: Setup, tmp_path: Path) -> None:
    """The Deployment's entry point: settings from the environment, reviews through the
    credentials it finds (here a kubeconfig; in a pod, its ServiceAccount)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "KUBECONFIG": str(setup.kubeconfig),
        "KUBEMILL_VIEWER_ROOT": str(setup.store),
        "KUBEMILL_VIEWER_LISTEN": "127.0.0.1",
        "KUBEMILL_VIEWER_PORT": "0",
        "KUBEMILL_VIEWER_AUTH": "token",
        "KUBEMILL_VIEWER_CACHE_DIR": str(tmp_path / "cache"),
    }
    _check_served(
        [str(Path(sys.executable).parent / "kubemill-viewer")],
        env,
        tmp_path,
        setup,
        r"kubemill-viewer: serving .* at (http://127\.0\.0\.1:\d+/); authentication: token",
    )


def test_kubemill_view_with_token_authentication(setup: Setup, tmp_path: Path) -> None:
    """`kubemill view --auth token`, the reviews through --kubeconfig."""
    argv = [
        str(Path(sys.executable).parent / "kubemill"), "view", str(setup.store),
        "--port", "0", "--auth", "token", "--kubeconfig", str(setup.kubeconfig),
        "--no-browser", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    _check_served(
        argv, env, tmp_path, setup, r"kubemill view: serving .* at (http://127\.0\.0\.1:\d+/)"
    )


def _check_served(
    argv: list[str], env: dict[str, str], tmp_path: Path, setup: Setup, ready: str
) -> None:
    """Start a viewer, wait for the line `ready` matches (its group: the URL), check who
    sees what through bearer tokens, and stop it."""
    log = (tmp_path / "viewer.log").open("wb")
    with log, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log) as process:
        try:
            assert process.stdout is not None
            lines = wait_for_line(process.stdout, "serving", START_TIMEOUT)
            match = re.search(ready, lines[-1])
            assert match, lines
            _check_tokens(match.group(1).rstrip("/"), setup)
        finally:
            process.terminate()
            process.wait(30)


def _check_tokens(url: str, setup: Setup) -> None:
    tokens = setup.tokens
    wait_until(
        lambda: _runs(url, tokens["root"])[0] != 503, 60, "the first runs index", interval=0.1
    )
    assert _runs(url, None) == (401, [])
    assert _runs(url, tokens["bob"]) == (200, [f"{setup.b}/daily"])
    assert _fetch(f"{url}/view/{setup.a}/daily/output.ipynb", tokens["bob"])[0] == 403


def test_the_viewer_deployment_serves_in_the_cluster_from_its_image(
    setup: Setup, cluster: Cluster, s3_server: Any, results_bucket: str
) -> None:
    """deploy/components/viewer as it is, but for its namespace, port and settings: the pod
    runs `kubemill-viewer` from the operator's image (non-root, read-only root), reads S3 with
    the Secret's credentials, asks the API server with its in-cluster ServiceAccount, and is
    Ready through its probes."""
    if not cluster.local:
        pytest.skip("reaches the pod at 127.0.0.1: the local node agent's host network")
    import yaml

    from kubemill_testenv.s3server import READER_KEY
    from tests.conftest import s3_client

    suffix = secrets.token_hex(3)
    prefix = f"viewer-pod-{suffix}/"
    writer = s3_client(s3_server)
    for path in sorted(setup.store.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(setup.store).as_posix()
            writer.put_object(Bucket=results_bucket, Key=key, Body=path.read_bytes())

    namespace, port = f"e2e-viewer-pod-{suffix}", free_port()
    built = subprocess.run(
        [cluster.kubectl_path, "kustomize", str(REPO_ROOT / "deploy/overlays/viewer")],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    documents = []
    for document in yaml.safe_load_all(built):
        if (
            not document
            or document["metadata"].get("labels", {}).get("app.kubernetes.io/name")
            != "kubemill-viewer"
        ):
            continue
        meta = document["metadata"]
        if "namespace" in meta:
            meta["namespace"] = namespace
        if document["kind"] == "ClusterRoleBinding":
            meta["name"] = f"kubemill-viewer-{suffix}"
            document["subjects"][0]["namespace"] = namespace
        if document["kind"] == "ConfigMap":
            document["data"].update(
                {
                    "KUBEMILL_VIEWER_ROOT": f"s3://{results_bucket}/{prefix}",
                    "AWS_ENDPOINT_URL": s3_server.endpoint_url,
                    "AWS_REGION": "us-east-1",
                    "KUBEMILL_VIEWER_AUTH": "token",
                    "KUBEMILL_VIEWER_REFRESH_SECONDS": "3600",
                }
            )
        if document["kind"] == "Deployment":
            # Pods share the host's network here: a port of its own.
            (container,) = document["spec"]["template"]["spec"]["containers"]
            container["ports"][0]["containerPort"] = port
            for variable in container["env"]:
                if variable["name"] == "KUBEMILL_VIEWER_PORT":
                    variable["value"] = str(port)
        documents.append(document)
    documents.append(
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "kubemill-viewer-s3", "namespace": namespace},
         "stringData": {"AWS_ACCESS_KEY_ID": READER_KEY[0],
                        "AWS_SECRET_ACCESS_KEY": READER_KEY[1]}}
    )  # fmt: skip
    with api_client(cluster.kubeconfig) as api:
        kube.request(
            api, "POST", "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace,
                  "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        )  # fmt: skip
        try:
            _apply(cluster, documents)
            rollout = cluster.kubectl(
                "-n", namespace, "rollout", "status", "deployment/kubemill-viewer",
                "--timeout=150s", check=False,
            )  # fmt: skip
            assert rollout.returncode == 0, (
                rollout.stderr
                + cluster.kubectl(
                    "-n", namespace, "logs", "deploy/kubemill-viewer", check=False
                ).stdout
            )
            url = f"http://127.0.0.1:{port}"
            # 503 until the first index; 502 until the authorizer sees the new binding.
            wait_until(
                lambda: _runs(url, setup.tokens["root"])[0] == 200,
                60,
                "the viewer pod's first runs index and reviews",
                interval=0.2,
            )
            assert _runs(url, None) == (401, [])
            a, b = setup.a, setup.b
            assert _runs(url, setup.tokens["alice"]) == (200, [f"{a}/daily", f"{a}/weekly"])
            status, page = _fetch(f"{url}/view/{b}/daily/output.ipynb", setup.tokens["bob"])
            assert status == 200 and b"bravo-report" in page
            assert _fetch(f"{url}/view/{a}/daily/output.ipynb", setup.tokens["bob"])[0] == 403
        finally:
            kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
            kube.request(
                api, "DELETE",
                f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubemill-viewer-{suffix}",
            )  # fmt: skip
