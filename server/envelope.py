"""Replies and errors in one shape; our exceptions mapped to HTTP codes in one place.

Every error, FastAPI's and Starlette's own included (401/403 from the rules,
404 for an unknown path, 405, a body that does not parse, 413), answers
``{success: false, code, message, data: null}`` (``code``: a machine-readable
word per kind of error, ``ERROR_CODES``); ``ERROR_RESPONSES`` declares them in
the OpenAPI document. Bad input is a 4xx with a message, never a 500, on every backend: a value the
database refuses (too long for its column, out of range: ``DataError`` on
PostgreSQL, ``OverflowError`` from sqlite3 for an int beyond 64 bits) is a 400
``invalid value: ...``, and an integer path or query parameter beyond 64 bits is
refused (422) before the endpoint runs, so it never reaches the database.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dawms.ddm_bridge.abc import DDMError
from dawms.scheduler.report import BadReport, StaleReport
from dawms.scheduler.task import TaskSpecError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def ok(data: Any = None, message: str = "") -> dict[str, Any]:
    return {"success": True, "message": message, "data": data}


ERROR_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "stale", 413: "too_large", 422: "invalid",
    500: "internal", 503: "unavailable",
}


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """The error envelope of one reply (``code`` from ``ERROR_CODES``)."""
    return {"success": False, "code": ERROR_CODES.get(status, f"http_{status}"),
            "message": message, "data": None, **extra}


class ErrorEnvelope(BaseModel):
    """An error reply: ``success`` is false, ``code`` says what kind (stable, for
    programs) and ``message`` says why (for people)."""

    success: Literal[False]
    code: str
    message: str
    data: None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text} for status, text in (
        (400, "bad input, or a body that does not parse"),
        (401, "no token, or one that is not valid (expired, revoked, unknown key or issuer)"),
        (403, "the caller's role or binding does not allow this"),
        (404, "no such thing"),
        (409, "stale: the attempt or lease is no longer current"),
        (413, "the body is larger than this route's limit (x-max-body-bytes)"),
        (422, "the request does not match its schema or bounds"),
    )}


class NotFound(LookupError):
    """The thing asked for does not exist."""


ERRORS: list[tuple[type[Exception], int]] = [
    (StaleReport, 409),
    (BadReport, 400),
    (TaskSpecError, 400),
    (DDMError, 400),
    (NotFound, 404),
    (LookupError, 404),
    (ValueError, 400),
]


# what the database raises for a value it cannot hold (see db_error)
DB_ERRORS: tuple[type[Exception], ...] = (DataError, OverflowError)


def db_error(exc: BaseException) -> str | None:
    """``invalid value: ...`` if the database refused a value of the request, else None.

    The one place that says which database errors are the caller's bad input.
    """
    if isinstance(exc, DataError):
        first = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()
        return f"invalid value: {first[0] if first else type(exc.orig).__name__}"
    if isinstance(exc, OverflowError):  # sqlite3 binding an int beyond 64 bits
        return f"invalid value: {exc}"
    return None


def _is_int_param(annotation: Any) -> bool:
    return annotation is int or int in typing.get_args(annotation)


def _int64_params(request: Request) -> None:
    """Refuse integer path and query parameters that no catalog column can hold."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    problems = []
    for where, params, raw in (("path", dependant.path_params, request.path_params),
                               ("query", dependant.query_params, request.query_params)):
        for param in params:
            value = raw.get(param.alias)
            if value is None or not _is_int_param(param.field_info.annotation):
                continue
            try:
                number = int(value)
            except ValueError:
                continue  # not a number at all: FastAPI's own validation says so
            if not INT64_MIN <= number <= INT64_MAX:
                problems.append({"loc": (where, param.alias), "type": "less_than_equal",
                                 "msg": f"must be from {INT64_MIN} to {INT64_MAX}",
                                 "input": value})
    if problems:
        raise RequestValidationError(problems)


def install(app: FastAPI) -> None:
    """Error handlers and the 64-bit check; call before including the routers."""
    def _reply(status: int, message: str, headers: dict[str, str] | None = None
               ) -> JSONResponse:
        return JSONResponse(error_body(status, message), status_code=status, headers=headers)

    for exc_type, status in ERRORS:
        app.add_exception_handler(
            exc_type, lambda _r, exc, status=status: _reply(status, str(exc)))
    for exc_type in DB_ERRORS:
        app.add_exception_handler(exc_type, lambda _r, exc: _reply(400, db_error(exc) or ""))
    # applies to every route included after this (app.py includes the routers next)
    app.router.dependencies.append(Depends(_int64_params))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _reply(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return _reply(422, f"invalid request: {problems}")
