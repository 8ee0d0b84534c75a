"""The pynetmon daemon: hosts named Dynmon monitors and packet captures behind a REST API
(Polycube-compatible routes under /polycube/v1, OpenAPI at /openapi.json) and serves every monitor's
metrics to Prometheus at /metrics. Run it with `pynetmon serve`; see docs/service.md.

>>> from pynetmon.service import ServiceConfig, create_app
>>> app = create_app(ServiceConfig(port=0))      # an ASGI app, for uvicorn or a test client
"""
from __future__ import annotations

from .app import ServiceState, create_app
from .config import ServiceConfig
from .server import serve

__all__ = ["ServiceConfig", "ServiceState", "create_app", "serve"]
