"""Replies and errors in one shape; our exceptions mapped to HTTP codes in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dawms.ddm_bridge.abc import DDMError
from dawms.scheduler.job import BadReport, StaleReport
from dawms.scheduler.task import TaskSpecError


def ok(data: Any = None, message: str = "") -> dict[str, Any]:
    return {"success": True, "message": message, "data": data}


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


def install(app: FastAPI) -> None:
    def _reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"success": False, "message": message, "data": None},
                            status_code=status)

    for exc_type, status in ERRORS:
        app.add_exception_handler(
            exc_type, lambda _r, exc, status=status: _reply(status, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return _reply(422, f"invalid request: {problems}")
