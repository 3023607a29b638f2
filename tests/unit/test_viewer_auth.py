"""The viewer's authentication and authorization decisions, without a server or a cluster:
who a request is (kubemill.viewer.auth), which paths and listing entries a reader may see
(kubemill.viewer.access), and the runs index's answers those decisions read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from kubemill.viewer.access import (
    PathFacts,
    access_review,
    identity_of_review,
    may_read,
    visible_children,
)
from kubemill.viewer.auth import (
    Identity,
    TtlCache,
    bearer_token,
    check_auth_settings,
    check_listen,
    parse_networks,
    proxy_identity,
)
from kubemill.viewer.errors import Forbidden, Unauthenticated, ViewerError
from kubemill.viewer.runindex import RunIndex
from kubemill.viewer.settings import settings_from_env

PROXY = parse_networks(["10.1.0.0/16", "127.0.0.2/32"])


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in values.items()})


# --- listening and settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "modes", "ok"),
    [
        ("127.0.0.1", (), True),
        ("::1", (), True),
        ("localhost", (), True),
        ("0.0.0.0", (), False),
        ("10.0.0.5", (), False),
        ("::", (), False),
        ("0.0.0.0", ("proxy",), True),
        ("0.0.0.0", ("token",), True),
    ],
)
def test_no_authentication_only_on_loopback(host: str, modes: tuple[str, ...], ok: bool) -> None:
    if ok:
        check_listen(host, modes)
    else:
        with pytest.raises(ViewerError, match="without authentication"):
            check_listen(host, modes)


@pytest.mark.parametrize(
    ("modes", "proxies", "header", "error"),
    [
        (("proxy",), ("10.0.0.0/8",), "email", None),
        (("proxy", "token"), ("10.0.0.1",), "user", None),
        (("token",), (), "email", None),
        (("proxy",), (), "email", "needs the proxy's addresses"),
        (("token",), ("10.0.0.0/8",), "email", "proxy is not on"),
        (("oidc",), (), "email", "unknown authentication mode oidc"),
        (("proxy",), ("10.0.0.0/33",), "email", "not an address or CIDR"),
        (("proxy",), ("10.0.0.0/8",), "name", "must be email or user"),
    ],
)
def test_auth_settings_are_checked(
    modes: tuple[str, ...], proxies: tuple[str, ...], header: str, error: str | None
) -> None:
    if error is None:
        check_auth_settings(modes, proxies, header)
    else:
        with pytest.raises(ViewerError, match=error):
            check_auth_settings(modes, proxies, header)


def test_settings_from_the_environment() -> None:
    settings = settings_from_env(
        {
            "KUBEMILL_VIEWER_ROOT": "s3://results/runs/",
            "KUBEMILL_VIEWER_BASE_PATH": "viewer/",
            "KUBEMILL_VIEWER_AUTH": "proxy, token",
            "KUBEMILL_VIEWER_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1",
            "KUBEMILL_VIEWER_CACHE_DIR": "/cache",
            "KUBEMILL_VIEWER_INDEX_DIR": "/index",
            "AWS_ENDPOINT_URL": "http://s3:8333",
            "AWS_REGION": "eu-west-1",
            "KUBEMILL_VIEWER_NAMESPACE_FROM_PATH": "true",
        }
    )
    assert settings.namespace_from_path is True
    assert settings.root == "s3://results/runs/"
    assert settings.base_path == "/viewer"
    assert settings.host == "0.0.0.0"
    assert settings.port == 8866
    assert settings.auth_modes == ("proxy", "token")
    assert settings.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert settings.cache_dir == Path("/cache")
    assert settings.runs_index_dir == Path("/index")
    assert (settings.s3_endpoint_url, settings.s3_region) == ("http://s3:8333", "eu-west-1")


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({}, "KUBEMILL_VIEWER_ROOT is not set"),
        ({"KUBEMILL_VIEWER_ROOT": "s3://b/", "KUBEMILL_VIEWER_PORT": "x"}, "not a TCP port"),
        ({"KUBEMILL_VIEWER_ROOT": "s3://b/", "KUBEMILL_VIEWER_REVIEW_TTL": "0"}, "more than 0"),
        (
            {"KUBEMILL_VIEWER_ROOT": "s3://b/", "KUBEMILL_VIEWER_NAMESPACE_FROM_PATH": "yes!"},
            "not true or false",
        ),
    ],
)
def test_bad_environment_is_named(environ: dict[str, str], error: str) -> None:
    with pytest.raises(ViewerError, match=error):
        settings_from_env(environ)


# --- who is asking ---------------------------------------------------------------------------


def test_proxy_headers_from_the_proxy_name_the_user_and_groups() -> None:
    identity = proxy_identity(
        headers(
            X_Forwarded_User="4711",
            X_Forwarded_Email="ada@example.com",
            X_Forwarded_Groups="team-a, admins",
        ),
        "10.1.2.3",
        PROXY,
    )
    assert identity == Identity(
        "ada@example.com", ("team-a", "admins", "system:authenticated"), via="proxy"
    )


def test_x_auth_request_headers_and_prefixes() -> None:
    identity = proxy_identity(
        headers(X_Auth_Request_User="4711", X_Auth_Request_Groups="team-a"),
        "127.0.0.2",
        PROXY,
        user_header="user",
        user_prefix="oidc:",
        groups_prefix="oidc:",
    )
    assert identity is not None
    assert (identity.user, identity.groups) == (
        "oidc:4711",
        ("oidc:team-a", "system:authenticated"),
    )


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.2.0.1", "::1", None, "not-an-address"])
@pytest.mark.parametrize(
    "header",
    ["X-Forwarded-User", "X-Forwarded-Email", "X-Auth-Request-Email", "X-Forwarded-Groups"],
)
def test_identity_headers_from_anyone_else_are_forbidden(peer: str | None, header: str) -> None:
    with pytest.raises(Forbidden, match="accepted only from the viewer's authenticating proxy"):
        proxy_identity(CIMultiDict({header: "ada@example.com"}), peer, PROXY)


def test_an_ipv4_mapped_peer_is_the_ipv4_address() -> None:
    assert proxy_identity(headers(X_Forwarded_Email="a@b"), "::ffff:10.1.0.9", PROXY) is not None


def test_no_identity_headers_is_no_identity_and_a_proxy_without_the_user_is_401() -> None:
    assert proxy_identity(headers(Accept="text/html"), "10.9.9.9", PROXY) is None
    with pytest.raises(Unauthenticated):
        proxy_identity(headers(X_Forwarded_User="4711"), "10.1.0.1", PROXY, user_header="email")


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer  abc ", "abc"),
        ("Basic YWRhOng=", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(value: str | None, token: str | None) -> None:
    assert bearer_token(value) == token


def test_token_review_answers() -> None:
    answer = {
        "status": {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:a:alice",
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
            },
        }
    }
    identity = identity_of_review(answer)
    assert identity is not None
    assert identity.user == "system:serviceaccount:a:alice"
    assert identity.extra == {"authentication.kubernetes.io/pod-name": ("p",)}
    assert identity_of_review({"status": {"authenticated": False}}) is None
    assert identity_of_review({}) is None
    review = access_review(identity, "team-a")
    assert review["spec"]["resourceAttributes"] == {
        "namespace": "team-a",
        "group": "kubemill.dev",
        "resource": "notebookruns",
        "verb": "get",
    }
    assert review["spec"]["uid"] == "u-1"
    assert review["spec"]["extra"] == {"authentication.kubernetes.io/pod-name": ["p"]}
    assert review["spec"]["groups"] == ["system:serviceaccounts", "system:authenticated"]


def test_ttl_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache: TtlCache[str, bool] = TtlCache(30, 3, clock=lambda: now[0])
    cache.put("a", True)
    cache.put("b", False)
    assert cache.get("a") is True
    assert cache.get("b") is False
    now[0] = 29.9
    assert cache.get("a") is True
    now[0] = 30.0
    assert cache.get("a") is None
    for key in "cdef":
        cache.put(key, True)
    assert len(cache) == 3
    assert cache.get("c") is None  # the least recently used went first
    cache.put("g", True, ttl=1)
    now[0] = 31.0
    assert cache.get("g") is None


# --- what a reader may see ------------------------------------------------------------------

A = frozenset({"team-a"})


@pytest.mark.parametrize(
    ("path", "facts", "allowed", "readable"),
    [
        # In a run folder: the run's namespace decides, whether the path exists or not.
        ("team-a/r1/output.ipynb", PathFacts(("team-a/r1", "team-a"), frozenset()), A, True),
        ("team-b/r2/output.ipynb", PathFacts(("team-b/r2", "team-b"), frozenset()), A, False),
        ("team-b/r2/missing.ipynb", PathFacts(("team-b/r2", "team-b"), frozenset()), A, False),
        # Above run folders: readable when one below is.
        ("team-a", PathFacts(None, frozenset({"team-a"})), A, True),
        ("team-b", PathFacts(None, frozenset({"team-b"})), A, False),
        ("mixed", PathFacts(None, frozenset({"team-b", "team-a", None})), A, True),
        # Nowhere the index knows (a loose file, a missing path): cluster-wide readers only.
        ("loose.txt", PathFacts(None, frozenset()), A, False),
        ("loose.txt", PathFacts(None, frozenset()), None, True),
        # A run whose run.json names no namespace (local, or in progress).
        ("x/output.ipynb", PathFacts(("x", None), frozenset()), A, False),
        ("x/output.ipynb", PathFacts(("x", None), frozenset()), None, True),
        # The root lists, filtered, for every authenticated reader.
        ("", PathFacts(None, frozenset()), frozenset(), True),
        # The run's namespace wins over a folder name that looks like another one.
        ("team-b/r9/output.ipynb", PathFacts(("team-b/r9", "team-a"), frozenset()), A, True),
        # namespace_from_path: the first segment counts where run.json says nothing...
        ("team-a/new/output.ipynb", PathFacts(None, frozenset(), "team-a"), A, True),
        (
            "team-a/live/output.ipynb",
            PathFacts(("team-a/live", None), frozenset(), "team-a"),
            A,
            True,
        ),
        (
            "team-b/live/output.ipynb",
            PathFacts(("team-b/live", None), frozenset(), "team-b"),
            A,
            False,
        ),
        # ...and never against what run.json says.
        (
            "team-a/r9/output.ipynb",
            PathFacts(("team-a/r9", "team-b"), frozenset(), "team-a"),
            A,
            False,
        ),
    ],
)
def test_may_read(
    path: str, facts: PathFacts, allowed: frozenset[str] | None, readable: bool
) -> None:
    assert may_read(path, facts, allowed) is readable


def test_a_listing_shows_only_entries_leading_to_readable_runs() -> None:
    children = [
        ("team-a", "team-a", False),
        ("team-b", "team-b", False),
        ("shared", "team-b", False),
        ("shared", "team-a", False),
        ("mine", "team-a", True),
        ("theirs", "team-b", True),
        ("nobodys", None, True),
    ]
    visible = visible_children(None, children, A)
    names = ["team-a", "team-b", "shared", "mine", "theirs", "nobodys", "loose.txt"]
    assert [n for n in names if visible(n)] == ["team-a", "shared", "mine"]
    assert all(visible_children(None, children, None)(n) for n in names)
    # Inside A's run folder every file is A's; a nested run of B's stays B's.
    inside = visible_children(("team-a/r1", "team-a"), [("nested", "team-b", True)], A)
    assert inside("output.ipynb") and inside("plots") and not inside("nested")
    inside_b = visible_children(("team-b/r2", "team-b"), [], A)
    assert not inside_b("output.ipynb")


def test_a_listing_with_namespaces_from_paths() -> None:
    # The root: each entry names its namespace; run.json's word wins where there is one.
    root = visible_children(
        None,
        [("team-a", None, False), ("team-b", None, False), ("odd", "team-a", True)],
        A,
        claimed=lambda name: name,
    )
    assert [n for n in ("team-a", "team-b", "odd", "loose.txt") if root(n)] == ["team-a", "odd"]
    # A namespace's folder: a run in progress (None) or not indexed yet is the folder's.
    folder = visible_children(
        None,
        [("live", None, True), ("moved", "team-b", True)],
        A,
        claimed=lambda name: "team-a",
    )
    assert [n for n in ("live", "fresh", "moved") if folder(n)] == ["live", "fresh"]


# --- the runs index's answers ---------------------------------------------------------------


class Folder:
    """A store of run folders on disk, for the index (kubemill.viewer.runindex_sources)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, folder: str, namespace: str | None) -> None:
        where = self.root / folder
        where.mkdir(parents=True)
        identity: Mapping[str, Any] = {"namespace": namespace} if namespace else {}
        document = {"status": "Succeeded", "identity": {"name": folder.rsplit("/")[-1], **identity}}
        (where / "run.json").write_text(json.dumps(document))
        (where / "output.ipynb").write_text("{}")


def test_index_children_enclosing_and_namespaces(tmp_path: Path) -> None:
    from kubemill.viewer.runindex_sources import LocalObjects

    store = Folder(tmp_path / "store")
    store.run("team-a/r1", "team-a")
    store.run("team-a/r2", "team-a")
    store.run("team-b/r1", "team-b")
    store.run("team-b/deep/er/r3", "team-b")
    store.run("team-a0", "team-a")  # the byte after "/" must not fall into team-a/'s range
    store.run("local", None)
    index = RunIndex(tmp_path / "index")
    try:
        index.rebuild(LocalObjects(tmp_path / "store"))
        assert index.namespaces() == ["team-a", "team-b"]
        assert sorted(index.children("")) == [
            ("local", None, True),
            ("team-a", "team-a", False),
            ("team-a0", "team-a", True),
            ("team-b", "team-b", False),
        ]
        assert sorted(index.children("team-a")) == [
            ("r1", "team-a", True),
            ("r2", "team-a", True),
        ]
        assert sorted(index.children("team-b")) == [
            ("deep", "team-b", False),
            ("r1", "team-b", True),
        ]
        assert index.children("team-a/r1") == []
        assert index.namespaces_under("") == {"team-a", "team-b", None}
        assert index.namespaces_under("team-b") == {"team-b"}
        assert index.namespaces_under("team-a") == {"team-a"}
        assert index.namespaces_under("team-a/r1") == set()
        assert index.enclosing("team-a/r1/output.ipynb") == ("team-a/r1", "team-a")
        assert index.enclosing("team-a/r1") == ("team-a/r1", "team-a")
        assert index.enclosing("team-b/deep/er/r3/x/y") == ("team-b/deep/er/r3", "team-b")
        assert index.enclosing("team-b/deep") is None
        assert index.enclosing("local/output.ipynb") == ("local", None)
        assert index.enclosing("nothing/here") is None
    finally:
        index.close()


# --- the gate's use of the reviews ------------------------------------------------------------


class Answers:
    """Reviews answered from a table, counting each question (the real API server is in
    tests/e2e/test_viewer_auth.py; here only how often it is asked)."""

    def __init__(self, allowed: set[tuple[str, str]], tokens: Mapping[str, str]) -> None:
        self.allowed = allowed
        self.tokens = tokens
        self.asked: list[tuple[str, str]] = []
        self.down = False

    def create(self, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.down:
            raise ConnectionError("connection refused")
        spec = body["spec"]
        if kind == "TokenReview":
            self.asked.append((kind, spec["token"]))
            user = self.tokens.get(spec["token"])
            return {"status": {"authenticated": bool(user), "user": {"username": user or ""}}}
        namespace = spec["resourceAttributes"]["namespace"]
        self.asked.append((spec["user"], namespace))
        return {"status": {"allowed": (spec["user"], namespace) in self.allowed}}


async def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _gate(answers: Answers, tmp_path: Path, modes: tuple[str, ...] = ("token",)) -> Any:
    from kubemill.viewer.access import Gate
    from kubemill.viewer.settings import ViewerSettings

    settings = ViewerSettings(root=str(tmp_path), cache_dir=tmp_path, auth_modes=modes)
    return Gate(settings, answers, _direct, RunIndex(tmp_path / "index"))


def test_reviews_are_cached_and_failures_are_not_taken_as_answers(tmp_path: Path) -> None:
    import asyncio

    from kubemill.viewer.access import ReviewFailed

    answers = Answers({("ada", "team-a")}, {"t-ada": "ada"})
    gate = _gate(answers, tmp_path)

    async def scenario() -> None:
        ada = await gate.authenticate(CIMultiDict({"Authorization": "Bearer t-ada"}), "10.0.0.1")
        assert ada.user == "ada" and ada.via == "token"
        again = await gate.authenticate(CIMultiDict({"Authorization": "Bearer t-ada"}), None)
        assert again == ada
        assert await gate.allowed(ada, ["team-a", "team-b"]) == frozenset({"team-a"})
        assert await gate.allowed(ada, ["team-a", "team-b"]) == frozenset({"team-a"})
        for _ in range(3):
            with pytest.raises(Unauthenticated, match="not valid"):
                await gate.authenticate(CIMultiDict({"Authorization": "Bearer nope"}), None)
        with pytest.raises(Unauthenticated, match="authentication required"):
            await gate.authenticate(CIMultiDict(), None)
        answers.down = True
        with pytest.raises(ReviewFailed, match="could not ask the Kubernetes API server"):
            await gate.may_read_namespace(ada, "team-c")
        assert await gate.may_read_namespace(ada, "team-a")  # still cached
        answers.down = False
        assert not await gate.may_read_namespace(ada, "team-c")

    asyncio.run(scenario())
    assert answers.asked == [
        ("TokenReview", "t-ada"),
        ("ada", ""),  # cluster-wide first: a cluster-wide reader needs no other question
        ("ada", "team-a"),
        ("ada", "team-b"),
        ("TokenReview", "nope"),  # a refusal is kept too (briefly)
        ("ada", "team-c"),
    ]


def test_without_a_mode_everyone_is_the_local_user_and_reads_everything(tmp_path: Path) -> None:
    import asyncio

    from kubemill.viewer.access import ANONYMOUS

    answers = Answers(set(), {})
    gate = _gate(answers, tmp_path, modes=())

    async def scenario() -> None:
        assert await gate.authenticate(CIMultiDict({"X-Forwarded-Email": "x@y"}), None) == (
            ANONYMOUS
        )
        assert await gate.allowed(ANONYMOUS, ["a"]) is None
        assert await gate.visible(ANONYMOUS, "a") is None
        await gate.check_path(ANONYMOUS, "a/b")

    asyncio.run(scenario())
    assert answers.asked == []
