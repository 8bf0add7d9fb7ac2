"""Writing files so that nothing is ever half-written: checkpoints, results, notebooks, datasets.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace`` (atomic on POSIX and Windows): a reader sees the old file or the new one, and an
interrupted run (Ctrl-C, a killed job, a full disk) leaves the previous file intact.

Usage::

    from ssd_lib.files import atomic_write, write_json
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    write_json(out / "eval.json", {"mAP": 0.9})
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_text", "write_bytes", "write_json"]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temp_path)`` and move the result to ``path`` in one step; the parent folder is
    created. On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it the usual mode
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")
