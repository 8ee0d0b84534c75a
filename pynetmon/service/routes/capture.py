"""Polycube's packetcapture service: `/polycube/v1/packetcapture/...`."""
from __future__ import annotations

from ..routing import RouteTable

table = RouteTable("packetcapture")
