"""Who is asking: the viewer's authentication decisions, pure and tested without a server.

Design, as built:

- Authentication is off only on loopback. A viewer bound to any other address must have at
  least one mode (`check_listen`), or it does not start: an open viewer would show every
  namespace's notebooks, read with the viewer's own S3 credentials, to anyone on the network.
- Mode "proxy": an authenticating reverse proxy (oauth2-proxy) logs people in and passes who
  they are in headers: X-Forwarded-User / -Email / -Groups (oauth2-proxy's upstream headers),
  or the X-Auth-Request-* ones (its `--set-xauthrequest`, as nginx's auth_request passes
  them). Anyone can send such a header, so it is believed only from the configured proxy
  addresses (`trusted_proxies`, CIDRs, compared with the TCP peer address, never with
  X-Forwarded-For, which is a header too). A request from another address that carries one is
  refused with 403, even when it also has a valid bearer token: it is an attempt to pose as
  someone, not a login.
- Mode "token": `Authorization: Bearer <token>`, a Kubernetes token (a ServiceAccount's, or
  whatever the API server authenticates: OIDC ID tokens, webhook tokens), checked with a
  TokenReview; the answer (user, groups, uid, extra) is the identity. Meant for scripts and
  `curl`, and for a proxy that passes the user's own token on.
- Both modes at once: proxy headers from the proxy win; otherwise the bearer token is checked.
- The identity names a Kubernetes user, because authorization (kubemill.viewer.access) asks the
  API server's own RBAC about it with SubjectAccessReviews. A proxy user is given the prefixes
  the API server's OIDC flags would give it (`proxy_user_prefix`, `proxy_groups_prefix`), and
  by default the e-mail is the user name, as `--oidc-username-claim=email` makes it.
- Answers of the API server are kept for `review_ttl` seconds in a bounded cache (`TtlCache`),
  keyed by a digest of the token, never the token itself.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import Forbidden, Unauthenticated, ViewerError

__all__ = [
    "AUTH_MODES",
    "IDENTITY_HEADERS",
    "PROXY_USER_HEADERS",
    "Identity",
    "TtlCache",
    "bearer_token",
    "check_auth_settings",
    "check_listen",
    "parse_networks",
    "proxy_identity",
]

#: The authentication modes the viewer knows.
AUTH_MODES = ("proxy", "token")

#: Headers that carry the user's name, by `proxy_user_header`, in the order they are read:
#: oauth2-proxy's upstream headers first, then its X-Auth-Request-* ones.
PROXY_USER_HEADERS = {
    "email": ("X-Forwarded-Email", "X-Auth-Request-Email"),
    "user": ("X-Forwarded-User", "X-Auth-Request-User"),
}
_GROUP_HEADERS = ("X-Forwarded-Groups", "X-Auth-Request-Groups")
#: Every header that claims an identity: refused from anyone but a trusted proxy.
IDENTITY_HEADERS = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Identity:
    """A person or program as Kubernetes knows it: what a SubjectAccessReview asks about."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    #: Extra attributes from a TokenReview (scopes, a pod's name), passed on to the reviews.
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: How the identity was established: "proxy", "token", or "none" (loopback, no auth).
    via: str = "none"

    @property
    def key(self) -> tuple[object, ...]:
        """What makes two identities the same to an authorizer (a cache key)."""
        return (
            self.user,
            tuple(sorted(self.groups)),
            self.uid,
            tuple(sorted((k, tuple(v)) for k, v in self.extra.items())),
        )


def check_auth_settings(
    modes: Sequence[str], trusted_proxies: Sequence[str], user_header: str
) -> None:
    """ViewerError (400: the settings' fault) for modes the viewer does not know, a proxy
    mode without the proxy's addresses, or a user header it does not read."""
    unknown = [m for m in modes if m not in AUTH_MODES]
    if unknown:
        raise ViewerError(
            f"unknown authentication mode {', '.join(unknown)}; use "
            f"{' or '.join(AUTH_MODES)} (or both)"
        )
    if "proxy" in modes and not trusted_proxies:
        raise ViewerError(
            "authentication mode proxy needs the proxy's addresses (trusted proxies, CIDRs "
            "such as 10.0.0.0/8): identity headers from anyone else are refused"
        )
    if trusted_proxies and "proxy" not in modes:
        raise ViewerError("trusted proxies are given but authentication mode proxy is not on")
    parse_networks(trusted_proxies)
    if user_header not in PROXY_USER_HEADERS:
        raise ViewerError(
            f"the proxy user header must be {' or '.join(PROXY_USER_HEADERS)}, not {user_header!r}"
        )


def check_listen(host: str, modes: Sequence[str]) -> None:
    """ViewerError unless the viewer may serve on `host` with these modes: without
    authentication only a loopback address keeps it to this machine."""
    if modes or is_loopback(host):
        return
    raise ViewerError(
        f"refusing to serve on {host} without authentication: anyone who reaches that "
        "address could read every notebook with the viewer's credentials; choose an "
        "authentication mode (proxy, behind oauth2-proxy; token, Kubernetes bearer tokens), "
        "or bind a loopback address (127.0.0.1 or ::1)"
    )


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the viewer on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; a ViewerError names one that is not."""
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ViewerError(f"trusted proxy {text!r} is not an address or CIDR") from None
    return tuple(networks)


def _from(peer: str | None, networks: Sequence[Network]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket
    return any(address in network for network in networks)


def _first(headers: Mapping[str, str], names: Sequence[str]) -> str:
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value
    return ""


def proxy_identity(
    headers: Mapping[str, str],
    peer: str | None,
    networks: Sequence[Network],
    *,
    user_header: str = "email",
    user_prefix: str = "",
    groups_prefix: str = "",
) -> Identity | None:
    """The identity the proxy's headers name, or None when the request carries none.

    Forbidden when identity headers come from an address outside `networks` (a forgery, or a
    proxy that is not configured), Unauthenticated when the proxy sent some but not the one
    with the user's name (a proxy set up to pass other headers)."""
    claimed = [name for name in IDENTITY_HEADERS if headers.get(name)]
    if not claimed:
        return None
    if not _from(peer, networks):
        raise Forbidden(
            f"identity headers ({', '.join(claimed)}) are accepted only from the viewer's "
            f"authenticating proxy, and {peer or 'this client'} is not one"
        )
    user = _first(headers, PROXY_USER_HEADERS[user_header])
    if not user:
        raise Unauthenticated(
            f"the proxy sent no {' or '.join(PROXY_USER_HEADERS[user_header])} header; set "
            "it up to pass the user's e-mail (oauth2-proxy: --pass-user-headers)"
        )
    groups = [g.strip() for g in _first(headers, _GROUP_HEADERS).split(",") if g.strip()]
    return Identity(
        user=user_prefix + user,
        groups=(*(groups_prefix + g for g in groups), "system:authenticated"),
        via="proxy",
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Answers kept for `ttl` seconds, at most `size` of them, the least recently used dropped
    first. Used from the event loop only, so it needs no lock."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        self._items[key] = (self._clock() + (self._ttl if ttl is None else ttl), value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
