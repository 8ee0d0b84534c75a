"""Polycube's packetcapture service: `/polycube/v1/packetcapture/...` (what Polycube's capture client
uses: the cube, its settings, `globalheader`, `packet`), plus `pcap`: the live capture as one pcap byte
stream (`curl -N URL | tcpdump -r -`), much cheaper than one request per packet."""
from __future__ import annotations

from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from .. import models, operations
from ..models import parse_json
from ..problems import ApiError, not_found
from ..routing import Call, RouteTable

table = RouteTable("packetcapture")
BASE = "/polycube/v1/packetcapture"
LEAVES = ("capture", "filter", "snaplen", "dump", "networkmode")
LeafValue = str | int | bool  # one setting's JSON value
table.params["leaf"] = Literal[LEAVES]  # the settings, from the tuple above


def _cube(call: Call):
    return call.registry.get(call.params["name"], "packetcapture")


@table.get(BASE, "List the packet captures",
           answer=list[models.CubeInfo])
def list_captures(call: Call) -> list[dict[str, Any]]:
    return [c.info() for c in call.registry.cubes("packetcapture")]


@table.get(BASE + "/{name}", "Show a packet capture (settings and counters)", answer=models.CubeInfo)
def show_capture(call: Call) -> dict[str, Any]:
    return _cube(call).info()


@table.post(BASE + "/{name}", "Create a packet capture (capture defaults to off; without a filter nothing is captured, as in Polycube)",
            body=models.PacketCaptureBody, body_required=False, status=201, answer=models.CubeInfo, heavy=True)
def create_capture(call: Call) -> dict[str, Any]:
    return operations.create_capture(call.registry, call.params["name"],
                                     parse_json(call.body, allow_empty=True)).info()


@table.patch(BASE + "/{name}", "Change capture, filter, snaplen, dump or networkmode while running",
             body=models.PacketCaptureBody, answer=models.CubeInfo, heavy=True)
def update_capture(call: Call) -> dict[str, Any]:
    operations.update_capture(call.registry, call.params["name"], parse_json(call.body))
    return _cube(call).info()


@table.delete(BASE + "/{name}", "Detach and delete a packet capture (its file is flushed)", status=204)
def delete_capture(call: Call) -> None:
    call.registry.delete(call.params["name"], "packetcapture")


@table.get(BASE + "/{name}/globalheader", "The pcap global header of GET .../packet's records",
           answer=models.GlobalHeader)
def global_header(call: Call) -> dict[str, int]:
    return _cube(call).global_header()


@table.get(BASE + "/{name}/packet", "The next captured packet (network mode; rawdata '' when none waits)",
           answer=models.Packet)
def next_packet(call: Call) -> dict[str, Any]:
    return _cube(call).next_packet()


async def _pcap_bytes(stream, stopping) -> Any:
    # The capture's stream yields an empty chunk every half second without traffic, so this loop sees
    # a daemon shutdown (and Starlette a gone client) promptly; the stream is always closed, which frees
    # the capture for the next reader.
    try:
        while not stopping.is_set():
            chunk = await run_in_threadpool(next, stream, None)
            if chunk is None:
                return
            if chunk:
                yield chunk
    finally:
        await run_in_threadpool(stream.close)


@table.get(BASE + "/{name}/pcap", "The live capture as a pcap byte stream (network mode): "
           "`curl -N URL | tcpdump -r -`", media_type="application/vnd.tcpdump.pcap",
           answer=bytes)
async def pcap_stream(call: Call) -> StreamingResponse:
    cube = await run_in_threadpool(_cube, call)
    stream = await run_in_threadpool(cube.stream)
    try:
        first = await run_in_threadpool(next, stream)  # the global header: errors surface before the 200
    except Exception as exc:
        stream.close()
        raise ApiError(409, f"packetcapture {cube.name!r}: {exc}") from exc

    async def body():
        yield first
        async for chunk in _pcap_bytes(stream, call.state.stopping):
            yield chunk

    return StreamingResponse(body(), media_type="application/vnd.tcpdump.pcap",
                             headers={"Cache-Control": "no-store"})


# Last: the generic /{name}/{leaf} routes must not shadow globalheader, packet and pcap.
def _leaf(call: Call) -> str:
    leaf = call.params["leaf"]
    if leaf not in LEAVES:
        raise not_found(f"setting {leaf!r} (settings: {', '.join(LEAVES)})")
    return leaf


@table.get(BASE + "/{name}/{leaf}", "One setting", answer=LeafValue, operation_id="get_capture_setting")
def show_setting(call: Call) -> Any:
    leaf = _leaf(call)
    return _cube(call).info()[leaf]


@table.patch(BASE + "/{name}/{leaf}", "Change one setting (body: its JSON value)", body=LeafValue,
             answer=models.CubeInfo, operation_id="patch_capture_setting")
def update_setting(call: Call) -> dict[str, Any]:
    leaf = _leaf(call)
    operations.update_capture(call.registry, call.params["name"], {leaf: parse_json(call.body)})
    return _cube(call).info()
