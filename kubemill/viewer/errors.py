"""What can go wrong while serving a store, each mapped to one HTTP status at the handler edge."""

from __future__ import annotations

__all__ = [
    "BadPath",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "StoreError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "ViewerError",
]


class ViewerError(Exception):
    """Base of the viewer's expected failures; `status` is the HTTP status that reports it."""

    status = 500
    #: Headers the answer carries besides the viewer's own (WWW-Authenticate on a 401).
    headers: dict[str, str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers = {}


class BadRequest(ViewerError):
    """A request that cannot be answered as asked (a bad query value); `reason` is the
    contents API's word for it ('bad type', 'bad format'), where it has one."""

    status = 400

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class BadPath(BadRequest):
    """A request path that names nothing inside the store: `..`, absolute, empty segments."""


class NotFound(ViewerError):
    """No object and no folder at this path (a missing S3 key, a missing file)."""

    status = 404


class StoreError(ViewerError):
    """The store could not be read (unreachable endpoint, denied credentials): not the user's
    request's fault, and worth retrying."""

    status = 502


class TooLarge(ViewerError):
    """An object bigger than the viewer reads into memory to render or to put in a JSON
    model; its raw bytes still download, streamed."""

    status = 413


class Unauthenticated(ViewerError):
    """No identity the viewer accepts: no proxy headers from a trusted proxy, no bearer token,
    or a token the API server's TokenReview does not authenticate."""

    status = 401

    def __init__(self, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": challenge} if challenge else {}


class Forbidden(ViewerError):
    """An identity that may not read this path or namespace, or identity headers from an
    address that is not a trusted proxy. The same answer whether the path exists or not."""

    status = 403


class Unavailable(ViewerError):
    """Not answerable yet (the runs index that authorization reads is being built); asked
    again after `retry_after` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}
