"""Opt-in downloads that verify a published md5, try mirrors in turn, and resume partial files.

Nothing in ``minseg`` calls this on its own: tests and notebooks run on the built-in synthetic
set, and real data is fetched only when a user asks (``python -m minseg data voc``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence


class DownloadError(RuntimeError):
    """No source gave a file with the expected checksum."""


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resumed = have and getattr(resp, "status", 200) == 206
        total = resp.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total else None
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=part.name[:-5])
        with open(part, mode) as f:
            while block := resp.read(1 << 20):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()


def download(urls: Sequence[str], dest: str | os.PathLike, md5: str, *, timeout: float = 60,
             progress: bool = True) -> Path:
    """Download ``dest`` from the first of ``urls`` that gives a file with the given ``md5``.

    An existing ``dest`` with the right md5 is kept. The transfer goes to ``dest + ".part"``
    and resumes from it; a finished file whose md5 does not match is deleted (a corrupt or
    truncated copy never stays on disk) and the next URL is tried. Raises
    :class:`DownloadError` with every URL's failure when none works.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if md5sum(dest) == md5:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            _fetch(url, part, timeout, progress)
        except (urllib.error.URLError, OSError, ValueError) as e:
            # keep the partial file: the next mirror (or the next run) resumes from it
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        got = md5sum(part)
        if got == md5:
            os.replace(part, dest)
            return dest
        part.unlink()
        errors.append(f"{url}: md5 mismatch (expected {md5}, got {got}); the file was removed")
    raise DownloadError("could not download " + dest.name + ":\n  " + "\n  ".join(errors))


def extract_tar(archive: str | os.PathLike, root: str | os.PathLike) -> None:
    """Extract a tar archive into ``root``, refusing members that would land outside it."""
    root = Path(root)
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:  # pragma: no cover - old Pythons without extraction filters
            base = root.resolve()
            for m in tar.getmembers():
                if not (base / m.name).resolve().is_relative_to(base):
                    raise DownloadError(f"unsafe path in archive: {m.name}")
            tar.extractall(root)


def fetch_dataset(root: str | os.PathLike, info: dict, check: Callable[[Path], object], *,
                  urls: Sequence[str] | None = None, keep_archive: bool = False,
                  progress: bool = True, page: str | None = None) -> Path:
    """Make sure the dataset of ``info`` (``filename``, ``md5``, ``size_gb``, ``urls``) is
    extracted in ``root``; ``check(root)`` raises ``FileNotFoundError`` while it is not.

    An extracted tree is kept as it is. Otherwise the archive is downloaded (:func:`download`:
    mirrors in turn, md5, resume), extracted and removed (unless ``keep_archive``), and the tree
    checked again. Offline, the :class:`DownloadError` says where to put the archive by hand
    (``page``: where a browser can get it). Returns ``root``.
    """
    root = Path(root)
    try:
        check(root)
        return root  # already downloaded and extracted
    except FileNotFoundError:
        pass
    archive = root / info["filename"]
    try:
        download(urls or info["urls"], archive, info["md5"], progress=progress)
    except DownloadError as e:
        where = f" from {page}" if page else ""
        raise DownloadError(
            f"{e}\nOffline or blocked? Download {info['filename']} ({info['size_gb']} GB, md5 "
            f"{info['md5']}){where} on another machine and put it at {archive}, then run this "
            f"command again: it verifies the file and extracts it.") from None
    extract_tar(archive, root)
    if not keep_archive:
        archive.unlink()
    check(root)
    return root


def free_space_gb(path: str | os.PathLike) -> float:
    """Free disk space at ``path`` (or its nearest existing parent) in GiB."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / 2**30
