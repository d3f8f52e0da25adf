"""Write run artifacts atomically (temporary folder, then rename) and fingerprint them."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(peft_model, dest: Path) -> str:
    """save_pretrained into `dest` atomically; returns the sha256 of the adapter weights."""
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    digest = sha256_file(tmp / ADAPTER_WEIGHTS)
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return digest
