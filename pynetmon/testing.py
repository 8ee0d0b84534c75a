"""Helpers for test suites that use pynetmon (ours and yours): is BPF usable here, and what to do if not.

Outside CI a test that needs BPF is skipped when the kernel or privileges are missing; in CI (CI=true)
it fails instead, so a broken environment can never look green.
"""
from __future__ import annotations

import functools
import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@functools.cache
def bpf_unavailable_reason() -> str | None:
    """Why BPF cannot be used here, or None when a real program loads and runs in the kernel."""
    try:
        from .object import BPFObject
        with BPFObject.from_package("counter") as obj:
            obj.load()
            obj.programs["count_ingress"].test_run(bytes(64))
    except Exception as exc:  # noqa: BLE001 - any failure means "no BPF here"
        return f"{type(exc).__name__}: {exc}"
    return None


def require_bpf() -> None:
    """Call at the start of a test that needs BPF: fails in CI, skips elsewhere, when BPF is missing."""
    import pytest

    reason = bpf_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"BPF is required in CI but unavailable: {reason}")
        pytest.skip(f"BPF unavailable: {reason}")
