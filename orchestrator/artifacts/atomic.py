"""Write run artifacts atomically and fingerprint them.

An adapter is saved into `<name>.tmp`, its files fsynced, then swapped with the current
`<name>` in one atomic step (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames with a
recovery rule), so a process killed at any moment leaves either the old or the new adapter
complete under `<name>`, never a half-written one or none. A write that fails (disk full, file
too large, read-only folder) leaves the previous adapter in place and raises WriteError.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.errors import WriteError, os_reason

ADAPTER_WEIGHTS = "adapter_model.safetensors"
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, fsync and rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise WriteError(f"cannot write {path.name} ({os_reason(exc)})", where=str(path),
                         fix="free disk space or make the output folder writable, then run the command again") from exc
    fsync_dir(path.parent)


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


def save_adapter(peft_model, dest: Path) -> str:
    """save_pretrained into `dest` atomically; returns the sha256 of the adapter weights."""
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    try:
        recover(dest)
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(tmp)
        _fsync_tree(tmp)
        digest = sha256_file(tmp / ADAPTER_WEIGHTS)
        if dest.exists() and exchange(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old adapter
        else:
            if dest.exists():  # fallback: a kill between the two renames is undone by recover()
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = "the previous one is intact" if dest.exists() else "there was none before"
        raise WriteError(f"cannot write {dest.name} ({os_reason(exc)}); {previous}", where=str(dest),
                         fix="free disk space or make the output folder writable, then run the command again") from exc
    fsync_dir(dest.parent)
    return digest
