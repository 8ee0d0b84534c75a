"""The registry of monitor kinds. Every module of this package is imported once on first use, and each
`@register`ed `Monitor` subclass becomes a kind: adding a monitor never touches a shared file."""
from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

from ..errors import ConfigError
from .base import Monitor

M = TypeVar("M", bound=type[Monitor])

_kinds: dict[str, type[Monitor]] = {}
_loaded = False
_lock = threading.Lock()


def register(cls: M) -> M:
    """Class decorator: make `cls` available as `cls.kind`."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise TypeError(f"{cls.__name__}.kind must be an identifier, not {kind!r}")
    other = _kinds.get(kind)
    if other is not None and other is not cls:
        raise TypeError(f"monitor kind {kind!r} is registered twice ({other.__name__}, {cls.__name__})")
    _kinds[kind] = cls
    return cls


def _load_all() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        package = importlib.import_module(__package__)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__package__}.{info.name}")
        _loaded = True


def kinds() -> dict[str, type[Monitor]]:
    """Every registered monitor class by kind, in name order."""
    _load_all()
    return dict(sorted(_kinds.items()))


def available() -> dict[str, str]:
    """{kind: one line of what it does}."""
    return {kind: cls.summary for kind, cls in kinds().items()}


def get(kind: str) -> type[Monitor]:
    """The class of `kind`; a ConfigError lists the kinds there are."""
    found = kinds().get(kind)
    if found is None:
        raise ConfigError([("kind", f"no monitor kind {kind!r}; available: {', '.join(kinds()) or 'none'}")])
    return found


def create(kind: str, interface: str | None = None, netns: str | None = None,
           options: Mapping[str, Any] | None = None) -> Monitor:
    """A validated, not yet started monitor of `kind`."""
    return get(kind)(interface=interface, netns=netns, options=options)


def open(kind: str, interface: str | None = None, netns: str | None = None, **options: Any) -> Monitor:
    """A started monitor of `kind` (use it as a context manager, or call `close()`)."""
    return create(kind, interface, netns, options).start()

