"""strawberry's extension runner, with each extension class's hooks looked up once.

For every request and every stage (operation, parsing, validation, execution) strawberry's
runner asks each extension for its hook: ``inspect`` checks the kind of the method, and
``contextlib.contextmanager`` wraps it anew (``functools.update_wrapper`` included), about 5%
of a worker's CPU under createUsageEvent load (issue #16). The answer depends only on the
extension's class, so ``CachedHooksRunner`` keeps it per class and stage and hands each
request's extension instance to the same context manager factory: the hooks run exactly as
before, in the same order, through the same ``ExitStack``.

Only the hook lookup (``ExtensionContextManagerBase.get_hook``, not a documented API) is
replaced, so ``GatewaySchema`` uses this runner only on the strawberry releases the compiled
path is proven on (``gateway.api.graphql_fast.proven``); hooks of another form than a
generator or an async generator (a plain method) keep strawberry's own lookup.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

Factory = Callable[[SchemaExtension], Any]
# Per (extension class, hook name): None (no hook of its own), (factory, is_async), or
# STRAWBERRY (a hook strawberry wraps otherwise: looked up by strawberry every time).
STRAWBERRY = object()
_hooks: dict[tuple[type, str], tuple[Factory, bool] | object | None] = {}


def _lookup(cls: type, name: str) -> tuple[Factory, bool] | object | None:
    fn = getattr(cls, name)
    if fn is getattr(SchemaExtension, name):
        return None
    if inspect.isgeneratorfunction(fn):
        return contextlib.contextmanager(fn), False
    if inspect.isasyncgenfunction(fn):
        return contextlib.asynccontextmanager(fn), True
    return STRAWBERRY


# Per (hook name, the extensions' classes): the positions of the extensions with a hook for
# this stage and their entries, or None when one of them needs strawberry's own lookup.
_plans: dict[tuple[str, tuple[type, ...]], list[tuple[int, Factory, bool]] | None] = {}


def _plan(name: str, classes: tuple[type, ...]) -> list[tuple[int, Factory, bool]] | None:
    plan: list[tuple[int, Factory, bool]] = []
    for index, cls in enumerate(classes):
        key = (cls, name)
        if key not in _hooks:
            _hooks[key] = _lookup(cls, name)
        entry = _hooks[key]
        if entry is STRAWBERRY:
            return None
        if entry is not None:
            factory, is_async = cast(tuple[Factory, bool], entry)
            plan.append((index, factory, is_async))
    return plan


class _CachedHooks(ExtensionContextManagerBase):
    __slots__ = ("entered",)

    def __init__(self, extensions: list[SchemaExtension]) -> None:
        # The same hooks as strawberry's __init__ finds, from a plan per set of classes (an
        # app has one): no lookup per extension, stage and request.
        key = (self.HOOK_NAME, tuple(map(type, extensions)))
        try:
            plan = _plans[key]
        except KeyError:
            plan = _plans[key] = _plan(*key)
        if plan is None:
            super().__init__(extensions)
            return
        self.default_hook = getattr(SchemaExtension, self.HOOK_NAME)
        self.hooks = [
            WrappedHook(
                extension=extensions[index],
                hook=functools.partial(factory, extensions[index]),
                is_async=is_async,
            )
            for index, factory, is_async in plan
        ]

    async def __aenter__(self) -> None:
        # As strawberry enters them, without its AsyncExitStack (created per stage and request):
        # the entered hooks are kept in order, and exited in reverse by __aexit__. A hook whose
        # entry fails leaves the ones before it entered, as under strawberry's stack.
        self.entered: list[tuple[bool, Any]] = []
        for hook in self.hooks:
            manager: Any = hook.hook()
            if hook.is_async:
                await manager.__aenter__()
            else:
                manager.__enter__()
            self.entered.append((hook.is_async, manager))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        entered = self.entered
        if exc_type is None:
            try:
                while entered:
                    is_async, manager = entered.pop()
                    if is_async:
                        await manager.__aexit__(None, None, None)
                    else:
                        manager.__exit__(None, None, None)
            except BaseException as error:
                # The hooks not exited yet see the error as under strawberry's stack; one of
                # them may suppress it, else it is raised (with the stack's context fixes).
                if not await _exit_stack(entered).__aexit__(
                    type(error), error, error.__traceback__
                ):
                    raise
            return
        # An exception leaves the stage: the whole exit is contextlib's, as strawberry's, and
        # as there the exception goes on even when a hook suppressed it.
        await _exit_stack(entered).__aexit__(exc_type, exc_val, exc_tb)

    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        try:
            entry = _hooks[key]
        except KeyError:
            entry = _hooks[key] = _lookup(*key)
        if entry is None:
            return None
        if entry is STRAWBERRY:
            return super().get_hook(extension)
        factory, is_async = cast(tuple[Factory, bool], entry)
        # factory(extension) is what contextmanager(MethodType(hook, extension))() gives.
        return WrappedHook(
            extension=extension, hook=functools.partial(factory, extension), is_async=is_async
        )


def _exit_stack(entered: list[tuple[bool, Any]]) -> contextlib.AsyncExitStack:
    """An AsyncExitStack holding the entered hooks' exits, in the order they were entered."""
    stack = contextlib.AsyncExitStack()
    for is_async, manager in entered:
        if is_async:
            stack.push_async_exit(manager)
        else:
            stack.push(manager)
    entered.clear()
    return stack


class _Operation(_CachedHooks, OperationContextManager):
    __slots__ = ()


class _Parsing(_CachedHooks, ParsingContextManager):
    __slots__ = ()


class _Validation(_CachedHooks, ValidationContextManager):
    __slots__ = ()


class _Executing(_CachedHooks, ExecutingContextManager):
    __slots__ = ()


class CachedHooksRunner(SchemaExtensionsRunner):
    """strawberry's runner; its stages look each extension class's hooks up once."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)
