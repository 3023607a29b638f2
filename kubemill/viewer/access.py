"""What a person may read: authentication (kubemill.viewer.auth) and authorization per
namespace, asked of the API server with SubjectAccessReviews.

Design, as built:

- The question is Kubernetes' own: "may this identity get notebookruns (kubemill.dev) in
  namespace N?", so whoever `kubectl get nbrun -n N` works for reads N's notebooks, and the
  viewer holds no access list of its own. Granted by `view`, `edit` and `admin` through
  kubemill's aggregated roles (deploy/base/user-roles.yaml).
- "Cluster-wide" is the same question for all namespaces (the review's namespace empty): a
  user bound cluster-wide (a ClusterRoleBinding to `view`) reads everything, and is the only
  one who reads what belongs to no namespace.
- A path's namespace is its run's: the runs index knows, for every run folder, the namespace
  its run.json names (the operator writes `<prefix><namespace>/<name>/`, and the runner records
  the namespace in run.json). A path belongs to the deepest run folder that is it or holds it.
  A folder that is in no run folder (the prefix's namespace folders, say) may be read by whoever
  may read some run folder under it, and its listing shows only the entries that lead to what
  the reader may read. A path that is neither in a run folder nor above one (a loose file, a
  run in progress whose run.json is not written yet, a local run without a namespace) is for
  cluster-wide readers only. The root's listing is open to every authenticated person
  (filtered): it says no more than that the viewer exists.
- Authorization comes before existence: the decision is made from the runs index and the
  reviews alone, before the store is asked, so a person of namespace A asking for any path in
  B's folder gets the same 403 whether it exists or not.
- A new run becomes readable to its namespace's people when the runs index has it (within one
  refresh, `--refresh-seconds`); until then cluster-wide readers only. Until the first index is
  built, everyone else is answered 503 with Retry-After: there is nothing to decide with.
- Unless the root is laid out as the operator writes it and the viewer is told so
  (`namespace_from_path`): then, where no run.json names a namespace (a run in progress, a run
  not indexed yet), the path's first segment does. run.json still wins where it names one, so
  a run that namespace A wrote under B's folder (its spec.output) is A's once it has finished;
  before that, B's people may read A's notebook in their folder, which only A could have
  caused. Without it, the path's place means nothing: folders can be named anything.
- Review answers are cached for `review_ttl` seconds, at most `review_cache_entries` of them:
  a revoked binding stops working within the TTL, and a page listing 200 runs costs one review
  per namespace, not one per link.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .auth import Identity, TtlCache, bearer_token, parse_networks, proxy_identity
from .errors import Forbidden, StoreError, Unauthenticated, Unavailable, ViewerError
from .listing import Arranged
from .runindex import IndexNotBuilt, RunIndex
from .settings import ViewerSettings

__all__ = [
    "ANONYMOUS",
    "Gate",
    "PathFacts",
    "ReviewFailed",
    "Reviews",
    "access_review",
    "filter_arranged",
    "identity_of_review",
    "may_read",
    "visible_children",
]

log = logging.getLogger("kubemill.viewer")

#: The resource whose read access is the right to read a namespace's notebooks.
RESOURCE = {"group": "kubemill.dev", "resource": "notebookruns", "verb": "get"}

#: Who is asking when authentication is off (loopback only): this machine's user, who has the
#: store's credentials anyway.
ANONYMOUS = Identity(user="local", via="none")

T = TypeVar("T")


class ReviewFailed(StoreError):
    """The API server did not answer a review (unreachable, or the viewer's own RBAC does not
    allow it): 502, and logged, never taken as a yes or a no."""


class Reviews(Protocol):
    """The two reviews the viewer asks the API server (kubemill.viewer.kubeapi), blocking."""

    def create(self, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """POST a TokenReview or SubjectAccessReview (`kind`), return the answered object."""
        ...


def token_review(token: str) -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }


def identity_of_review(answer: Mapping[str, Any]) -> Identity | None:
    """The identity a TokenReview answered with; None when it did not authenticate."""
    status = answer.get("status") or {}
    if not status.get("authenticated"):
        return None
    user = status.get("user") or {}
    if not user.get("username"):
        return None
    extra = {str(k): tuple(str(x) for x in v or ()) for k, v in (user.get("extra") or {}).items()}
    return Identity(
        user=str(user["username"]),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        uid=str(user.get("uid") or ""),
        extra=extra,
        via="token",
    )


def access_review(identity: Identity, namespace: str) -> dict[str, Any]:
    """The SubjectAccessReview asking whether `identity` may read `namespace` ("" for all)."""
    spec: dict[str, Any] = {
        "user": identity.user,
        "groups": list(identity.groups),
        "resourceAttributes": {"namespace": namespace, **RESOURCE},
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {k: list(v) for k, v in identity.extra.items()}
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    }


# --- the path rule, pure ---------------------------------------------------------------------


@dataclass(frozen=True)
class PathFacts:
    """What the runs index says about a path: the run folder it is in, and the namespaces of
    the run folders under it."""

    #: The deepest run folder that is the path or holds it, and its namespace; None if none.
    enclosing: tuple[str, str | None] | None
    #: Namespaces of run folders strictly under the path (None: a run without one).
    below: frozenset[str | None]
    #: The namespace the path's first segment names, when the viewer's root is laid out as
    #: the operator writes it (`namespace_from_path`); None otherwise.
    claimed: str | None = None

    def namespaces(self) -> set[str]:
        """The namespaces whose access decides this path."""
        found = {n for n in self.below if n is not None}
        if self.enclosing is not None and self.enclosing[1] is not None:
            found.add(self.enclosing[1])
        if self.claimed is not None:
            found.add(self.claimed)
        return found


def may_read(path: str, facts: PathFacts, allowed: frozenset[str] | None) -> bool:
    """Whether a reader who may read the namespaces `allowed` (None: all of them, a
    cluster-wide reader) may read `path`: see the module's docstring."""
    if allowed is None or path == "":
        return True
    recorded = facts.enclosing[1] if facts.enclosing is not None else None
    # What run.json says wins; the path's word counts only where run.json says nothing.
    namespace = recorded if recorded is not None else facts.claimed
    if namespace is not None and namespace in allowed:
        return True
    return any(n is not None and n in allowed for n in facts.below)


def visible_children(
    enclosing: tuple[str, str | None] | None,
    children: Iterable[tuple[str, str | None, bool]],
    allowed: frozenset[str] | None,
    claimed: Callable[[str], str | None] = lambda name: None,
) -> Callable[[str], bool]:
    """Which entries of a folder a reader sees: `enclosing` is the folder's own run folder,
    `children` what RunIndex.children says of the run folders under it, `claimed` the
    namespace an entry's path names (`namespace_from_path`)."""
    if allowed is None:
        return lambda name: True
    own: dict[str, str | None] = {}
    below: dict[str, set[str | None]] = {}
    for name, namespace, is_run in children:
        if is_run:
            own[name] = namespace
        else:
            below.setdefault(name, set()).add(namespace)
    folder = enclosing[1] if enclosing is not None else None

    def visible(name: str) -> bool:
        recorded = own.get(name, folder)
        namespace = recorded if recorded is not None else claimed(name)
        if namespace is not None and namespace in allowed:
            return True
        return any(n is not None and n in allowed for n in below.get(name, ()))

    return visible


def filter_arranged(arranged: Arranged, keep: Callable[[str], bool]) -> Arranged:
    """A sorted listing with only the entries `keep` passes, in the same order, so paging and
    its cursors work on what the reader sees."""
    groups: list[list[Any]] = []
    keys: list[list[tuple[float, str]]] = []
    for group, group_keys in zip(arranged.groups, arranged.keys, strict=True):
        pairs = [(e, k) for e, k in zip(group, group_keys, strict=True) if keep(e.name)]
        groups.append([e for e, _ in pairs])
        keys.append([k for _, k in pairs])
    return Arranged(arranged.sort, (groups[0], groups[1]), (keys[0], keys[1]))


# --- the gate ---------------------------------------------------------------------------------


class Gate:
    """Authentication and the reviews behind authorization, for one viewer. Blocking calls
    (the reviews) go through `run`, the viewer's thread pool."""

    def __init__(
        self,
        settings: ViewerSettings,
        reviews: Reviews | None,
        run: Callable[..., Awaitable[Any]],
        index: RunIndex,
        retry_after: int = 5,
    ) -> None:
        self.modes = settings.auth_modes
        if self.modes and reviews is None:
            raise ViewerError("authentication needs the Kubernetes API for its reviews")
        self._settings = settings
        self._reviews = reviews
        self._run = run
        self._index = index
        self._retry_after = retry_after
        self._from_path = settings.namespace_from_path
        self._networks = parse_networks(settings.trusted_proxies)
        # An answer is kept in a 1-tuple: a refusal (None) is an answer too.
        self._tokens: TtlCache[str, tuple[Identity | None]] = TtlCache(
            settings.review_ttl, settings.review_cache_entries
        )
        self._grants: TtlCache[tuple[object, ...], bool] = TtlCache(
            settings.review_ttl, settings.review_cache_entries
        )

    @property
    def enabled(self) -> bool:
        return bool(self.modes)

    async def authenticate(self, headers: Mapping[str, str], peer: str | None) -> Identity:
        """Who sent this request, by the configured modes; Unauthenticated or Forbidden."""
        if not self.modes:
            return ANONYMOUS
        settings = self._settings
        if "proxy" in self.modes:
            identity = proxy_identity(
                headers,
                peer,
                self._networks,
                user_header=settings.proxy_user_header,
                user_prefix=settings.proxy_user_prefix,
                groups_prefix=settings.proxy_groups_prefix,
            )
            if identity is not None:
                return identity
        token = bearer_token(headers.get("Authorization"))
        if "token" in self.modes and token is not None:
            identity = await self._token_identity(token)
            if identity is None:
                raise Unauthenticated(
                    "the bearer token is not valid (the API server's TokenReview did not "
                    "authenticate it)",
                    'Bearer realm="kubemill"',
                )
            return identity
        how = []
        if "proxy" in self.modes:
            how.append("log in through the viewer's address (its authenticating proxy)")
        if "token" in self.modes:
            how.append("send a Kubernetes token (Authorization: Bearer ...)")
        raise Unauthenticated(
            "authentication required: " + ", or ".join(how),
            'Bearer realm="kubemill"' if "token" in self.modes else None,
        )

    async def _token_identity(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached[0]
        answer = await self._review("TokenReview", token_review(token))
        identity = identity_of_review(answer)
        # A refusal is kept briefly too, so a client that keeps sending a bad token costs a
        # review per few seconds, not one per request.
        ttl = None if identity else min(5.0, self._settings.review_ttl)
        self._tokens.put(key, (identity,), ttl)
        return identity

    async def _review(self, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        assert self._reviews is not None
        try:
            answer: Mapping[str, Any] = await self._run(self._reviews.create, kind, body)
            return answer
        except ReviewFailed:
            raise
        except Exception as exc:
            log.warning("%s failed: %s", kind, exc)
            raise ReviewFailed(
                f"the viewer could not ask the Kubernetes API server ({kind}): "
                f"{type(exc).__name__}; its log has the details"
            ) from None

    async def may_read_namespace(self, identity: Identity, namespace: str) -> bool:
        """Whether `identity` may get notebookruns in `namespace` ("" asks for all of them)."""
        if not self.modes:
            return True
        key = (*identity.key, namespace)
        cached = self._grants.get(key)
        if cached is not None:
            return cached
        answer = await self._review("SubjectAccessReview", access_review(identity, namespace))
        allowed = bool((answer.get("status") or {}).get("allowed"))
        self._grants.put(key, allowed)
        return allowed

    async def allowed(self, identity: Identity, namespaces: Sequence[str]) -> frozenset[str] | None:
        """Of `namespaces`, those `identity` may read; None when it may read all of them
        (cluster-wide), which also covers what belongs to no namespace."""
        if not self.modes or await self.may_read_namespace(identity, ""):
            return None
        answers = await asyncio.gather(
            *(self.may_read_namespace(identity, namespace) for namespace in namespaces)
        )
        return frozenset(n for n, yes in zip(namespaces, answers, strict=True) if yes)

    # --- decisions over the runs index, for the application's hooks ---------------------

    async def _all_namespaces(self, identity: Identity) -> bool:
        return not self.modes or await self.may_read_namespace(identity, "")

    async def _indexed(self, fn: Callable[..., T], *args: Any) -> T:
        """An answer of the runs index (blocking SQLite, on the viewer's threads); 503 while
        there is no index to decide with."""
        try:
            result: T = await self._run(fn, *args)
        except IndexNotBuilt:
            raise Unavailable(
                "the runs index, which says whose each run is, is being built; ask again shortly",
                self._retry_after,
            ) from None
        return result

    async def check_path(self, identity: Identity, path: str) -> None:
        """Forbidden unless `identity` may read `path` (may_read), decided before the store
        is asked: the same answer whether the path exists or not."""
        if path == "" or await self._all_namespaces(identity):
            return
        enclosing = await self._indexed(self._index.enclosing, path)
        below = await self._indexed(self._index.namespaces_under, path)
        claimed = path.split("/")[0] if self._from_path else None
        facts = PathFacts(enclosing, frozenset(below), claimed)
        allowed = await self.allowed(identity, sorted(facts.namespaces()))
        if not may_read(path, facts, allowed):
            raise Forbidden(
                f"{identity.user} may not read {path}: it is not in a namespace whose "
                "notebookruns they may get"
            )

    async def readable_namespaces(self, identity: Identity) -> frozenset[str] | None:
        """The namespaces of the indexed runs that `identity` may read (the runs view's
        RunFilter.allowed_namespaces); None for all of them. IndexNotBuilt passes through:
        the runs view has its own page for that."""
        if await self._all_namespaces(identity):
            return None
        return await self.allowed(identity, await self._run(self._index.namespaces))

    async def visible(self, identity: Identity, path: str) -> Callable[[str], bool] | None:
        """Which entries of the folder `path` `identity` sees (visible_children); None: all."""
        if await self._all_namespaces(identity):
            return None
        enclosing = await self._indexed(self._index.enclosing, path)
        children = await self._indexed(self._index.children, path)
        namespaces = {n for _, n, _ in children if n is not None}
        if enclosing is not None and enclosing[1] is not None:
            namespaces.add(enclosing[1])
        claimed = _claimed(path) if self._from_path else lambda name: None
        # The path's namespace where run.json names none: in a namespace's folder, that one;
        # at the root, each entry that leads to such runs (never every name the root holds).
        if self._from_path and path:
            namespaces.add(path.split("/")[0])
        elif self._from_path:
            namespaces.update(name for name, n, _ in children if n is None)
        allowed = await self.allowed(identity, sorted(namespaces))
        return visible_children(enclosing, children, allowed, claimed)


def _claimed(path: str) -> Callable[[str], str | None]:
    """The namespace each entry of the folder `path` names by its place: the first segment."""
    if path:
        first = path.split("/")[0]
        return lambda name: first
    return lambda name: name
