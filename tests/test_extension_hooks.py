"""The cached-hooks runner (gateway.api.extension_hooks) runs extension hooks as strawberry's
runner does: the same order of entries and exits, the same exceptions (a hook failing on exit,
an error leaving the stage, a hook that swallows it), with the same causes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

from gateway.api.extension_hooks import CachedHooksRunner


class Boom(Exception):
    pass


def make(log: list[str], name: str, *, fail_on_exit: bool = False, swallow: bool = False) -> Any:
    class Sync(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            log.append(f"enter {name}")
            try:
                yield
            except Exception as exc:
                log.append(f"{name} saw {exc!r}")
                if not swallow:
                    raise
            if fail_on_exit:
                raise Boom(f"{name} failed on exit")
            log.append(f"exit {name}")

    class Async(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            log.append(f"enter async {name}")
            yield
            log.append(f"exit async {name}")

    return [Sync(), Async()]


SETUPS: list[dict[str, dict[str, bool]]] = [
    {"a": {}, "b": {}, "c": {}},
    {"a": {}, "b": {"fail_on_exit": True}, "c": {}},
    {"a": {"swallow": True}, "b": {"fail_on_exit": True}, "c": {}},
    {"a": {"fail_on_exit": True}, "b": {"fail_on_exit": True}, "c": {}},
    {"a": {}, "b": {"swallow": True}, "c": {}},
]


async def _run(runner_class: type, setup: dict[str, dict[str, bool]], fail: bool) -> list[str]:
    log: list[str] = []
    extensions = [ext for name, kw in setup.items() for ext in make(log, name, **kw)]
    runner = runner_class(execution_context=None, extensions=extensions)
    try:
        async with runner.operation():
            async with runner.executing():
                log.append("body")
            if fail:
                raise Boom("in the stage")
    except Boom as exc:
        context = exc.__context__
        log.append(f"raised {exc!r} context {context!r}")
    return log


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("setup", SETUPS)
async def test_hooks_run_as_under_strawberrys_runner(
    setup: dict[str, dict[str, bool]], fail: bool
) -> None:
    ours = await _run(CachedHooksRunner, setup, fail)
    strawberrys = await _run(SchemaExtensionsRunner, setup, fail)
    assert ours == strawberrys
    assert ours[:3] == ["enter a", "enter b", "enter c"]
