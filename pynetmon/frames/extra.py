"""The optional dependencies of the data features (`pip install 'pynetmon[data]'`), imported on first use.

numpy, pandas and matplotlib are not needed to monitor or capture; a call that needs one of them and does
not find it raises `MissingExtraError` naming the extra to install.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError

EXTRA = "data"


def require(module: str, what: str) -> ModuleType:
    """Import `module` (numpy, pandas, matplotlib...) for `what`, or raise MissingExtraError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module.split(".")[0], EXTRA, what) from None
