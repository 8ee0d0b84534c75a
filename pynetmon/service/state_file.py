"""The state file: the daemon's cubes (configs and attachments) as JSON, rewritten atomically after every
change and read back at start-up, so a restarted daemon monitors what it monitored before.

Format: {"version": 1, "cubes": [{"service": "dynmon", "name": ..., "type": ..., "dataplane-config": ...,
"port": ...}, {"service": "packetcapture", "name": ..., "capture": ..., ...}]}
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError

VERSION = 1


def save(path: Path, cubes: list[dict[str, Any]]) -> None:
    """Write `cubes` to `path` so that a crash leaves either the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "cubes": cubes}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # it holds injected code; keep it as private as the token
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a crash only once the directory is synced
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> list[dict[str, Any]]:
    """The cubes kept in `path` ([] when it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError([("--state-file", f"cannot read {str(path)!r}: {exc.strerror}")]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([("--state-file", f"{str(path)!r} is not JSON: {exc}")]) from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("cubes"), list):
        raise ConfigError([("--state-file", f"{str(path)!r} is not a pynetmon state file (version {VERSION})")])
    return [c for c in doc["cubes"] if isinstance(c, dict)]
