"""Write run artifacts atomically and fingerprint them: the one place that does it.

A file (`atomic_write`: the run's config.yaml, checkpoint.pt, audio-cache packs, EXPERIMENTS.md)
is written to a uniquely named temporary file beside it, flushed and fsynced, renamed over the
old one (keeping the old one's permission bits) and the folder fsynced: a process killed at any
moment leaves the old file or the new one, never half of one, and concurrent writers never
share a temporary file. A write that fails leaves the previous file in place.

An adapter (a folder) is saved into `<name>.tmp`, its files fsynced, then swapped with the
current `<name>` in one atomic step (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames
with a recovery rule), so a kill leaves either the old or the new adapter complete under
`<name>`, never a half-written one or none. A write that fails (disk full, file too large,
read-only folder) leaves the previous adapter in place and raises WriteError.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.errors import WriteError, os_reason

T = TypeVar("T")

__all__ = ["atomic_write", "check_output_dir", "exchange", "fsync_dir", "recover",
           "save_adapter", "sha256_file", "write_text_atomic"]
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def check_output_dir(path: str) -> None:
    """Create `path` if needed and prove a file can be written there (WriteError otherwise)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # a probe of its own: the points of a parallel sweep check the same folder at once
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise WriteError(f"output folder is not writable ({exc.strerror or exc})", where=f"output_dir={path}",
                         fix="choose a writable folder: output_dir=/path/to/outputs") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the system or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = True) -> None:
    """Write `path` atomically: `write(fh)` fills a new temporary file beside it (binary), which is
    fsynced and renamed over `path`; then the folder is fsynced. If anything fails (or is
    interrupted) the temporary file is removed, `path` keeps its previous content and the
    exception propagates unchanged (callers word it; see write_text_atomic). `durable=False`
    skips both fsyncs, for files rebuilt from the registry on every write (the report's
    curves): readers still never see half a file, but a power loss may lose the new version."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        # O_EXCL with the umask's mode (not mkstemp's 0600): a new file gets the usual permissions
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Write `text` to `path` atomically (atomic_write); WriteError if it cannot be written."""
    try:
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), durable=durable)
    except Exception as exc:
        raise WriteError(f"cannot write {path.name} ({os_reason(exc)})", where=str(path),
                         fix="free disk space or make the output folder writable, then run the command again") from exc


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover(dest: Path) -> None:
    """Finish what a killed fallback swap left: `<name>` missing but `<name>.old` complete."""
    old = dest.with_name(dest.name + ".old")
    if not dest.exists() and old.is_dir():
        os.replace(old, dest)


def replace_dir(dest: Path, fill: Callable[[Path], T]) -> T:
    """Fill `<dest>.tmp` with `fill(tmp)`, fsync it and swap it in for `dest` in one atomic step
    (renameat2 RENAME_EXCHANGE; elsewhere two renames that `recover` completes after a kill), so
    `dest` is always either the old folder or the new one, complete; returns what `fill` returned.
    If anything fails, `<dest>.tmp` is removed and the exception propagates unchanged."""
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    try:
        recover(dest)
        shutil.rmtree(tmp, ignore_errors=True)
        result = fill(tmp)
        _fsync_tree(tmp)
        if dest.exists() and exchange(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
        else:
            if dest.exists():  # fallback: a kill between the two renames is undone by recover()
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)
    return result


def save_adapter(peft_model, dest: Path) -> str:
    """save_pretrained into `dest` atomically (replace_dir); returns the sha256 of the adapter weights."""
    def fill(tmp: Path) -> str:
        peft_model.save_pretrained(tmp)
        return sha256_file(tmp / ADAPTER_WEIGHTS)

    try:
        return replace_dir(dest, fill)
    except Exception as exc:
        previous = "the previous one is intact" if dest.exists() else "there was none before"
        raise WriteError(f"cannot write {dest.name} ({os_reason(exc)}); {previous}", where=str(dest),
                         fix="free disk space or make the output folder writable, then run the command again") from exc
