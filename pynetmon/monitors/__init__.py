"""Ready monitors: flows, TCP, RTT, DNS, drops, latency, the guards and the HTTP monitor — precompiled
CO-RE objects with one Python shape (`Monitor`), found through one registry.

>>> from pynetmon import monitors
>>> monitors.available()
{'flows': '...', ...}
>>> with monitors.open("flows", interface="eth0", top=10) as m:
...     snap = m.snapshot()
...     text = m.open_metrics()
"""
from __future__ import annotations

from .base import Monitor, MonitorOptions
from .registry import available, create, get, kinds, open, register

__all__ = ["Monitor", "MonitorOptions", "available", "create", "get", "kinds", "open", "register"]
