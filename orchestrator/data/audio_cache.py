"""The decoded-audio cache: each list of audio files decoded once, kept on disk, memory-mapped.

`load_audio` (the one audio path) is the only decoder; this module stores what it returns. An
entry ("pack") holds the waveforms of one list of files, e.g. one manifest's, concatenated in a
float32 .npy that is memory-mapped on load, so concurrent runs share the page cache instead of
each holding a private copy. Its name is a hash of the files' *content* (sha256 of the bytes),
the sample rate, the RMS target and FORMAT_VERSION: a changed file or setting gets a new entry,
a renamed or copied file reuses the old one. Layout, under `<output_dir>/.audio_cache/`:

    pack-<key>.npy    float32 samples of every distinct file, one after another
    pack-<key>.json   the index: settings, file hashes, offsets, byte size and CRC-32 of the .npy

Both are written by artifacts.atomic.atomic_write (temporary file, fsync, rename), the .npy
first, so the .json marks a complete entry: concurrent writers (who write identical bytes) and SIGKILL never leave a
half-written entry that passes for a whole one. On load the index is checked against the .npy
(header, shape, size, CRC-32); an entry that fails is decoded again and replaced.
Imports only numpy, the audio path and the file hasher.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from orchestrator.artifacts.atomic import atomic_write, sha256_file
from orchestrator.data.audio import load_audio

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the layout or load_audio's output changes: old entries are ignored
_DTYPE = np.dtype("<f4")  # what load_audio returns (float32), little-endian on disk


class CorruptEntry(Exception):
    """A cache entry that does not match its index (truncated, overwritten, wrong format)."""


class AudioCache:
    """Packs of decoded waveforms under `root` for one (sample_rate, rms_target) setting."""

    def __init__(self, root: str | os.PathLike[str], *, sample_rate: int, rms_target: float | None):
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.rms_target = float(rms_target) if rms_target else None  # None and 0: not normalised

    def key(self, digests: list[str]) -> str:
        """The entry name of these distinct file digests (in order) under this cache's settings."""
        ident = {"format": FORMAT_VERSION, "sample_rate": self.sample_rate, "rms_target": self.rms_target,
                 "audio": digests}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"pack-{key}.npy", self.root / f"pack-{key}.json"

    def load(self, paths: Iterable[str], digests: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
        """{path: waveform} for every path, bit-identical to load_audio's output (read-only views).

        Reads the entry of these files when it is there and sound; otherwise decodes them with
        load_audio, writes the entry and returns views of what was written. `digests` may give
        the sha256 of files already hashed (manifest.load_split does); the others are hashed here."""
        paths = list(dict.fromkeys(paths))
        known = digests or {}
        digest_of = {p: known.get(p) or sha256_file(Path(p)) for p in paths}
        distinct = list(dict.fromkeys(digest_of.values()))  # same bytes under two names: stored once
        key = self.key(distinct)
        try:
            samples, offsets = self._read(key, distinct)
        except FileNotFoundError:
            samples, offsets = self._build(key, distinct, digest_of)
        except CorruptEntry as exc:
            log.warning("audio cache: %s is damaged (%s); decoding again", self.paths(key)[0], exc)
            samples, offsets = self._build(key, distinct, digest_of)
        where = {d: i for i, d in enumerate(distinct)}
        return {p: samples[offsets[where[d]]:offsets[where[d] + 1]] for p, d in digest_of.items()}

    # --- reading --------------------------------------------------------------------------------

    def _read(self, key: str, digests: list[str]) -> tuple[np.ndarray, list[int]]:
        npy, index_path = self.paths(key)
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CorruptEntry(f"unreadable index: {exc}") from None
        expected = {"format": FORMAT_VERSION, "sample_rate": self.sample_rate, "rms_target": self.rms_target,
                    "audio": digests}
        if not isinstance(index, dict) or any(index.get(k) != v for k, v in expected.items()):
            raise CorruptEntry("index does not describe this entry")
        offsets = index.get("offsets")
        if not (isinstance(offsets, list) and len(offsets) == len(digests) + 1 and offsets[0] == 0
                and all(a <= b for a, b in zip(offsets, offsets[1:]))):
            raise CorruptEntry("bad offsets in the index")
        try:
            if npy.stat().st_size != index.get("bytes"):
                raise CorruptEntry(f"size {npy.stat().st_size} bytes, index says {index.get('bytes')}")
            samples = np.load(npy, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise CorruptEntry("index without its .npy") from None
        except (OSError, ValueError) as exc:
            raise CorruptEntry(f"unreadable .npy: {exc}") from None
        if samples.dtype != _DTYPE or samples.shape != (offsets[-1],):
            raise CorruptEntry(f"holds {samples.dtype} {samples.shape}, index says float32 ({offsets[-1]},)")
        if zlib.crc32(samples) != index.get("crc32"):
            raise CorruptEntry("CRC-32 mismatch")
        return np.asarray(samples), offsets

    # --- writing --------------------------------------------------------------------------------

    def _build(self, key: str, digests: list[str], digest_of: dict[str, str]) -> tuple[np.ndarray, list[int]]:
        path_of = {}
        for p, d in digest_of.items():
            path_of.setdefault(d, p)
        waves = [load_audio(path_of[d], sample_rate=self.sample_rate, rms_target=self.rms_target) for d in digests]
        offsets = [0]
        for wave in waves:
            offsets.append(offsets[-1] + wave.size)
        try:
            self._write(key, digests, waves, offsets)
        except OSError as exc:  # a read-only or full disk: still correct, just not cached
            log.warning("audio cache: cannot write under %s (%s); decoding in memory only", self.root, exc)
            return np.concatenate(waves) if waves else np.zeros(0, np.float32), offsets
        log.info("audio cache: decoded %d files (%.1f min of audio) into %s", len(waves),
                 offsets[-1] / self.sample_rate / 60, self.paths(key)[0])
        return self._read(key, digests)[0], offsets

    def _write(self, key: str, digests: list[str], waves: list[np.ndarray], offsets: list[int]) -> None:
        npy, index_path = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        written = {"crc32": 0, "bytes": 0}

        def samples(fh) -> None:
            np.lib.format.write_array_header_1_0(fh, {"descr": _DTYPE.str, "fortran_order": False,
                                                      "shape": (offsets[-1],)})
            for wave in waves:
                data = np.ascontiguousarray(wave, dtype=_DTYPE)
                written["crc32"] = zlib.crc32(data, written["crc32"])
                fh.write(memoryview(data).cast("B"))
            written["bytes"] = fh.tell()

        atomic_write(npy, samples)  # the .npy first: the index marks a complete entry
        index = {"format": FORMAT_VERSION, "sample_rate": self.sample_rate, "rms_target": self.rms_target,
                 "audio": digests, "offsets": offsets, **written}
        atomic_write(index_path, lambda fh: fh.write(json.dumps(index).encode()))

