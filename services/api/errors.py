"""What can go wrong answering an API request, and the HTTP status each maps to at the boundary.

Exceptions::

    ApiError                  carries the status and a message that is safe to show
    ├── BadRequest            400: the request names an unknown key, a malformed value, ...
    ├── Unauthorized          401: no bridge token, or a bad one
    ├── Forbidden             403: the token's role may not see what was asked for
    └── StoreUnavailable      503: ClickHouse is unreachable or failed the query
"""

from __future__ import annotations


class ApiError(Exception):
    status_code = 500

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, str]:
        body = {"message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class StoreUnavailable(ApiError):
    status_code = 503


class NotFound(ApiError):
    status_code = 404
