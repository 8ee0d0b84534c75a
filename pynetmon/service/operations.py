"""What the daemon does, apart from HTTP: create, configure, attach, detach and delete cubes. The routes
and the start-up restore from the state file both go through here, so both behave the same."""
from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError
from ..link.placement import placed
from .dynmon_cube import DynmonCube
from .models import (
    AttachBody,
    CubeType,
    DynmonBody,
    MonitorBody,
    MonitorUpdateBody,
    PacketCaptureBody,
    validate,
)
from .ports import candidates, resolve_port, split_port
from .problems import ApiError, from_exception
from .registry import Registry

if TYPE_CHECKING:
    from .capture_cube import CaptureCube
    from .monitor_cube import MonitorCube

log = logging.getLogger("pynetmon.service")


def check_dataplane_config(config: Any, path_prefix: str) -> None:
    """Refuse a structurally wrong dataplane-config (wrong JSON types, unknown fields) with a 422 before
    anything is created or compiled."""
    from ..dynmon.config import parse_config
    try:
        if not isinstance(config, dict):
            raise ConfigError([("", f"must be a JSON object, not {type(config).__name__}")])
        parse_config(config, strict=True)
    except ConfigError as exc:
        err = from_exception(exc, path_prefix)
        err.status = 422
        raise err from None


def create_dynmon(registry: Registry, name: str, body: Any, *, owner: tuple[str, str] | None = None) -> DynmonCube:
    """A new dynmon cube from a Polycube `dynmon` body; with a dataplane-config, it is loaded first,
    and a config that fails to load leaves no cube behind. `owner`: (config file, entry) of a declared
    cube (see Registry.create)."""
    model = validate(DynmonBody, body if body is not None else {})
    config = model.dataplane_config
    if config is not None:
        check_dataplane_config(config, "dataplane-config")

    def build() -> DynmonCube:
        cube = DynmonCube(name, CubeType(model.type), registry.netns)
        try:
            if config is not None:
                cube.set_config(config)
        except BaseException:
            cube.close()
            raise
        return cube

    return cast(DynmonCube, registry.create(name, build, "dynmon", owner))


def set_dataplane_config(registry: Registry, name: str, config: Any) -> None:
    """Replace a dynmon cube's dataplane; the running one stays on any error."""
    cube = registry.get_mutable(name, "dynmon")
    check_dataplane_config(config, "")
    cube.set_config(config, path_prefix="")
    registry.save()


def create_capture(registry: Registry, name: str, body: Any, *, restored: bool = False,
                   owner: tuple[str, str] | None = None) -> CaptureCube:
    """A new packetcapture cube from a Polycube `packetcapture` body (`restored`: from the state file, so
    its file is continued, not replaced)."""
    from .capture_cube import CaptureCube
    model = validate(PacketCaptureBody, body if body is not None else {})
    return cast(CaptureCube, registry.create(name, lambda: CaptureCube(name, model, registry.netns, registry.capture_dir,
                                                                       registry.limits, restored=restored),
                                             "packetcapture", owner))


def update_capture(registry: Registry, name: str, body: Any) -> None:
    """Change a capture's settings at run time (only the fields given)."""
    cube = registry.get_mutable(name, "packetcapture")
    cube.update(validate(PacketCaptureBody, body if body is not None else {}))
    registry.save()


def create_monitor(registry: Registry, name: str, body: Any, *, restored: bool = False,
                   owner: tuple[str, str] | None = None) -> MonitorCube:
    """A new, started ready monitor (`POST /monitors/{name}`); without `netns` it attaches in the
    daemon's namespace. Bad options are a 400 naming them (`options.top`); nothing is left behind.
    `restored` (from the state file): a missing interface is waited for instead of refused."""
    from .monitor_cube import MonitorCube
    model = validate(MonitorBody, body if body is not None else {})
    if name == "kinds":  # GET /monitors/kinds lists the kinds
        raise ApiError(422, "'kinds' is reserved (GET /monitors/kinds)", [("name", "reserved")])
    netns = model.netns if model.netns is not None else registry.netns
    return cast(MonitorCube, registry.create(
        name, lambda: MonitorCube(name, model.kind, model.interface, netns, model.options, registry.capture_dir,
                                  wait=restored),
        "monitor", owner))


def monitor_action(registry: Registry, name: str, action: str, body: Any) -> Any:
    """Run one of a monitor's actions (`POST /monitors/{name}/{action}`, e.g. ddos `block {"cidr",
    "seconds"}`); the state file keeps its effect."""
    result = registry.get(name, "monitor").act(action, body if body is not None else {})
    registry.save()
    return result


def update_monitor(registry: Registry, name: str, body: Any) -> None:
    """Change a monitor's live options (`PUT /monitors/{name}`)."""
    cube = registry.get_mutable(name, "monitor")
    cube.update(validate(MonitorUpdateBody, body).options)
    registry.save()


def attach(registry: Registry, body: Any) -> None:
    """Polycube's `attach {cube, port}`: `port` is an interface name in the daemon's namespace, or
    Polycube's `cube:port` form, a bridge's member interface (`br1:veth1`: see ports.py)."""
    model = validate(AttachBody, body)
    cube = registry.get_mutable(model.cube)
    interface = resolve_port(model.port, registry.netns)
    with _placement(registry, model, interface):
        cube.attach(interface, alias=model.port if interface != model.port else None)
    registry.save()


def _placement(registry: Registry, model: AttachBody, interface: str) -> AbstractContextManager[object]:
    """Polycube's `position=first|last|auto`, `before=CUBE`, `after=CUBE` as a link placement (the new
    programs go first, or before/after the other cube's programs on each hook; last by default)."""
    given = [k for k in ("before", "after") if getattr(model, k)] + \
        (["position"] if model.position not in (None, "auto", "last") else [])
    if len(given) > 1:
        raise ApiError(400, f"give one of position, before and after, not {' and '.join(given)}",
                       [(k, "conflicts") for k in given])
    if model.position == "first":
        return placed(first=True)
    for key in ("before", "after"):
        name = getattr(model, key)
        if name is None:
            continue
        other = registry.get(name)
        if not isinstance(other, DynmonCube):
            raise ApiError(400, f"{key} must name a dynmon cube; {name!r} is a {other.service} cube",
                           [(key, "not a dynmon cube")])
        if other.port != interface:
            raise ApiError(409, f"dynmon {name!r} is not attached to {interface!r}",
                           [(key, f"not attached to {interface}")])
        ids = other.program_ids()
        return placed(before=ids) if key == "before" else placed(after=ids)
    return contextlib.nullcontext()


def detach(registry: Registry, body: Any) -> None:
    model = validate(AttachBody, body)
    cube = registry.get_mutable(model.cube)
    # Detaching needs no check that the bridge still holds the port (it may be gone with it).
    names = candidates(model.port)
    cube.detach(cube.wanted if cube.wanted in names else split_port(model.port)[1])
    registry.save()


def restore(registry: Registry, saved: list[dict[str, Any]]) -> list[str]:
    """Rebuild the cubes kept in a state file. A cube whose interface does not exist (yet) is kept,
    "waiting for interface", and attached when it appears; captures continue their files. A cube that
    cannot be rebuilt (its code no longer compiles) is logged and skipped; the others still come back.
    Returns the problems."""
    problems = []
    for entry in saved:
        name = str(entry.get("name", ""))
        service = entry.get("service")
        try:
            if service == "dynmon":
                create_dynmon(registry, name, {"type": entry.get("type", "TC"),
                                               **({"dataplane-config": entry["dataplane-config"]}
                                                  if entry.get("dataplane-config") else {})})
            elif service == "monitor":
                create_monitor(registry, name, {k: entry.get(k) for k in ("kind", "interface", "netns", "options")
                                                if entry.get(k) is not None}, restored=True
                               ).restore_runtime(entry.get("runtime"))
                continue  # a monitor attaches when created
            elif service == "packetcapture":
                create_capture(registry, name, {k: v for k, v in entry.items()
                                                if k not in ("service", "name", "port")}, restored=True)
            else:
                raise ValueError(f"unknown service {service!r}")
            if entry.get("port"):
                registry.get(name).wait_for(str(entry["port"]))
        except Exception as exc:  # noqa: BLE001 - one bad entry must not keep the daemon from starting
            problems.append(f"{service} {name!r}: {exc}")
            registry.unrestored.append(entry)
            log.error("state file: cannot restore %s %r (kept in the file): %s", service, name, exc)
    registry.save()
    return problems
