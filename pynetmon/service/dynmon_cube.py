"""A dynmon cube: one `pynetmon.Dynmon` plus what Polycube's API shows about it."""
from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client.core import Metric

from ..link import DIRECTIONS
from .cube import Cube
from .models import CubeType
from .problems import from_exception

log = logging.getLogger("pynetmon.service")


class DynmonCube(Cube):
    """A named monitor of Polycube type TC, XDP_SKB or XDP_DRV."""

    service = "dynmon"

    def __init__(self, name: str, cube_type: CubeType, netns: str | None):
        from ..dynmon import Dynmon  # imported here: the daemon starts even if the dynmon package is broken

        super().__init__(name, netns)
        self.cube_type = cube_type
        self.monitor = Dynmon(name)

    def type_name(self) -> str:
        return self.cube_type.value

    @property
    def config(self) -> dict:
        """The dataplane-config that runs (both paths; a path without a program is {})."""
        return self.monitor.dataplane_config

    def set_config(self, config: dict, path_prefix: str = "dataplane-config") -> None:
        """Replace the dataplane; on any error the old one keeps running and the error says why
        (`path_prefix` locates the config in the request body, for the error's JSON paths)."""
        with self.lock:
            self.check_interface()
            try:
                with self.memory:
                    self.monitor.set_dataplane_config(config)
            except Exception as exc:
                raise from_exception(exc, path_prefix) from exc
            log.info("dynmon %r: new dataplane-config (%s)", self.name,
                     ", ".join(f"{d}: {(config.get(f'{d}-path') or {}).get('name') or '-'}"
                               for d in DIRECTIONS if f"{d}-path" in config) or "no paths given")

    def _attach(self, port: str) -> None:
        # Dynmon attaches in `netns` itself (and keeps using it when the config changes).
        self.monitor.attach(port, mode=self.cube_type.attach_mode, netns=self.netns)

    def in_netns(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _detach(self) -> None:
        self.monitor.detach()

    def _close(self) -> None:
        self.monitor.close()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["dataplane-config"] = self.config
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"type": self.cube_type.value, "dataplane-config": self.config, "port": self.wanted}

    # -- reads (no cube lock: Dynmon's reads wait only for the final swap of a config change) ----
    def metrics(self, direction: str | None = None, metric: str | None = None, *, raw: bool = False) -> Any:
        if direction is None:
            return self.monitor.metrics(raw=raw)
        return self.monitor.metrics(direction, metric, raw=raw)

    def metrics_json(self, direction: str | None = None, metric: str | None = None) -> bytes:
        """`metrics()` as the JSON text of the answer, written in bulk (see `Dynmon.metrics_json`)."""
        return self.monitor.metrics_json(direction, metric)

    def program_ids(self) -> set[int]:
        """The ids of the programs this cube runs on its interface (what `before`/`after` place against)."""
        attached = self.monitor.attachment or {}
        return {link["program_id"] for link in attached.get("links", {}).values()}

    def open_metrics(self, fmt: str = "openmetrics") -> str:
        """The metrics as OpenMetrics text, or as Polycube writes them (`fmt="polycube"`)."""
        if fmt == "polycube":
            return self.monitor.polycube_open_metrics()
        return self.monitor.open_metrics(fmt)

    def families(self) -> list[Metric]:
        """The monitor's OpenMetrics families, every sample labelled `monitor="NAME"` (families whose map
        did not change since the previous scrape are the same objects: see `Dynmon.families`)."""
        return self.monitor.families(labels={"monitor": self.name})
