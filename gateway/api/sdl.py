"""The schema's SDL over HTTP: GET /graphql/schema.graphql (what `export-schema` writes).

Code generators (graphql-codegen, ariadne-codegen) and people can read the schema without an
introspection query; it is served only where introspection is on, since it says the same.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

SDL_URL = "/graphql/schema.graphql"


def sdl_route(sdl: str) -> Route:
    async def schema_sdl(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(sdl, headers={"Cache-Control": "no-cache"})

    return Route(SDL_URL, schema_sdl, methods=["GET", "HEAD"], name="schema_sdl")
