"""Every route the app serves, included routers and mounted sub-apps flattened.

FastAPI may keep included routers as lazily expanded entries of ``app.routes``;
``iter_route_contexts`` (where FastAPI has it) flattens them. The body limits,
the OpenAPI post-processing and the role x endpoint matrix test all walk this
one list, so a route cannot escape any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

try:  # FastAPI >= 0.16x keeps included routers as entries to expand
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
    def iter_route_contexts(routes: Any) -> Iterator[Any]:  # type: ignore[misc]
        yield from routes


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    path_regex: Any
    dependant: Any | None  # FastAPI's Dependant, None for plain Starlette routes
    openapi_extra: dict[str, Any]
    mounted: bool = False


def _walk(routes: list[BaseRoute], prefix: str = "", mounted: bool = False
          ) -> Iterator[RouteInfo]:
    for rc in iter_route_contexts(routes):
        path = getattr(rc, "path", None) or ""
        if isinstance(getattr(rc, "_effective_route", rc), Mount) or isinstance(rc, Mount):
            sub = getattr(rc, "routes", None) or []
            if sub:
                yield from _walk(list(sub), prefix + path, True)
            else:  # a mounted app with no routes to list: it must be declared as a whole
                yield RouteInfo(prefix + path, frozenset({"*"}), rc.path_regex, None, {},
                                True)
            continue
        yield RouteInfo(prefix + path, frozenset(getattr(rc, "methods", None) or ()),
                        rc.path_regex, getattr(rc, "dependant", None),
                        dict(getattr(rc, "openapi_extra", None) or {}), mounted)


def api_routes(app: FastAPI) -> list[RouteInfo]:
    return list(_walk(list(app.routes)))


def rule_of(app: FastAPI, route: RouteInfo) -> Any | None:
    """The ``auth.Rule`` a route declares (a dependency), or None if it declares none."""
    from .auth import PUBLIC, Rule

    if route.dependant is None:
        return PUBLIC if route.path in public_documents(app) else None
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Rule):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def public_documents(app: FastAPI) -> set[str]:
    """The OpenAPI document (docs pages are off): open to anyone by design."""
    return {p for p in (app.openapi_url,) if p}
