"""Run-folder I/O: atomic writes, environment records, and the no-silent-overwrite rule."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from ensemble_dfd import __version__
from ensemble_dfd.errors import UserError


class RunExistsError(UserError, FileExistsError):
    """A finished result would be overwritten without --overwrite."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) then rename tmp_path to path, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def guard_overwrite(path: str | Path, overwrite: bool, what: str = "result") -> None:
    """Refuse to replace an existing file or non-empty folder unless overwrite is set."""
    path = Path(path)
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not overwrite:
        raise RunExistsError(
            f"{path}: a finished {what} is already there; pass --overwrite to replace it"
        )


def package_versions(names: tuple[str, ...] = (
    "numpy", "pandas", "scikit-learn", "opencv-python-headless", "dlib-bin", "keras",
    "tensorflow", "tensorflow-cpu", "keras-tuner", "jax",
)) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ran this: versions, platform, CPU count (device details come from the trainer)."""
    env = {
        "ensemble_dfd": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    env.update(extra or {})
    return env


def publish_dir(tmp: Path, out: Path, overwrite: bool, what: str = "result") -> None:
    """Rename a finished temp folder into place; an existing one is replaced only if asked,
    and only after the new one is complete."""
    guard_overwrite(out, overwrite, what)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(out: Path, overwrite: bool, what: str = "result") -> Iterator[Path]:
    """A temporary folder beside `out` to write a step's output into; when the block ends
    it is renamed to `out` (see publish_dir), and if the block raises it is removed, so a
    failed step leaves no partial output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        publish_dir(tmp, out, overwrite, what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
