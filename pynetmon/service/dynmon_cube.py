"""A dynmon cube: one `pynetmon.Dynmon` plus what Polycube's API shows about it."""
from __future__ import annotations

import copy
import logging
from typing import Any

from .cube import Cube
from .models import CubeType
from .problems import from_exception

log = logging.getLogger("pynetmon.service")

DIRECTIONS = ("ingress", "egress")


class DynmonCube(Cube):
    """A named monitor. `config` is the dataplane-config that is running (None before the first one)."""

    service = "dynmon"

    def __init__(self, name: str, cube_type: CubeType, netns: str | None):
        from ..dynmon import Dynmon  # imported here: the service starts even if a monitor module is broken

        super().__init__(name, netns)
        self.cube_type = cube_type
        self.config: dict | None = None
        self.monitor = Dynmon(name)

    def type_name(self) -> str:
        return self.cube_type.value

    def set_config(self, config: dict, path_prefix: str = "dataplane-config") -> None:
        """Replace the dataplane; on any error the old one keeps running and the error says why
        (`path_prefix` locates the config in the request body, for the error's JSON paths)."""
        with self.lock:
            try:
                with self.in_netns():
                    self.monitor.set_dataplane_config(copy.deepcopy(config))
            except Exception as exc:
                raise from_exception(exc, path_prefix) from exc
            self.config = config
            log.info("dynmon %r: new dataplane-config (%s)", self.name,
                     ", ".join(f"{d}: {(config.get(f'{d}-path') or {}).get('name') or '-'}" for d in DIRECTIONS))

    def _attach(self, port: str) -> None:
        self.monitor.attach(port, mode=self.cube_type.attach_mode)

    def _detach(self) -> None:
        self.monitor.detach()

    def _close(self) -> None:
        self.monitor.close()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["dataplane-config"] = self.config or {}
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"type": self.cube_type.value, "dataplane-config": self.config, "port": self.port}

    # -- reads (no lock: Dynmon's reads are safe while a new dataplane is being loaded) ---------
    def metrics(self, direction: str | None = None, metric: str | None = None) -> Any:
        if direction is None:
            return self.monitor.metrics()
        if metric is None:
            return self.monitor.metrics(direction)
        return self.monitor.metrics(direction, metric)

    def open_metrics(self) -> str:
        return self.monitor.open_metrics()
