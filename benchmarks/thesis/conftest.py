"""Options of the thesis benchmark: `make bench-thesis PYTEST_ARGS="--thesis-durations --rounds 5"`."""
from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("thesis benchmark")
    group.addoption("--thesis-durations", action="store_true",
                    help="the thesis' 60 s runs (iperf3 -O 10 -t 60; h2load sized for 60 s) instead of short ones")
    group.addoption("--rounds", type=int, default=3, help="interleaved rounds per row (medians are reported)")
    group.addoption("--duration", type=int, default=5, help="seconds per run when not --thesis-durations")
