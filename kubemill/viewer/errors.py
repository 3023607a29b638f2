"""What can go wrong while serving a store, each mapped to one HTTP status at the handler edge."""

from __future__ import annotations

__all__ = ["BadPath", "BadRequest", "NotFound", "StoreError", "ViewerError"]


class ViewerError(Exception):
    """Base of the viewer's expected failures; `status` is the HTTP status that reports it."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
