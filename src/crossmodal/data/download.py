"""Streaming, resumable, verified downloads.

A download streams into ``NAME.part`` with a progress bar. A cut connection is retried and the
transfer resumes from the bytes already on disk with an HTTP ``Range`` request. When the transfer
is complete the size and checksum are checked against the manifest; a mismatch moves the file
aside to ``NAME.bad`` (kept for inspection) and raises an error that says what to do. Only a
verified file is renamed to ``NAME``, so the final path existing means the bytes are right.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests
from tqdm import tqdm

from crossmodal.errors import ChecksumError, DownloadError

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set as the manifest describes it."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def located(self, mirror: str | None) -> str:
        """The URL or local path to fetch from: the official URL, or the same name on a mirror."""
        if not mirror:
            return self.url
        if "://" in mirror:
            return urljoin(mirror.rstrip("/") + "/", self.name)
        return str(Path(mirror) / self.name)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> str:
    """Check size and every known checksum; return the sha256. Raise ChecksumError on mismatch."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumError(
            f"{remote.name}: size {size} bytes, manifest says {remote.size} "
            "(truncated or wrong file)"
        )
    if remote.md5 is not None:
        got = file_digest(path, "md5")
        if got != remote.md5:
            raise ChecksumError(f"{remote.name}: md5 {got}, manifest says {remote.md5}")
    sha = file_digest(path, "sha256")
    if remote.sha256 is not None and sha != remote.sha256:
        raise ChecksumError(f"{remote.name}: sha256 {sha}, manifest says {remote.sha256}")
    return sha


def _stream_http(url: str, part: Path, total_hint: int | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        if resp.status_code == 416 and have and total_hint == have:
            return  # already complete
        if resp.status_code == 206:
            mode = "ab"
        elif resp.status_code == 200:
            mode, have = "wb", 0  # server ignored Range: start again
        else:
            raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else total_hint
        expected = int(length) if length is not None else None
        received = 0
        with (
            part.open(mode) as out,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=part.stem, leave=False
            ) as bar,
        ):
            for block in resp.iter_content(CHUNK):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if expected is not None and received < expected:
            raise requests.ConnectionError(f"connection cut after {received}/{expected} bytes")


def _copy_local(src: Path, part: Path) -> None:
    if not src.is_file():
        raise DownloadError(f"{src}: no such file in the local mirror")
    shutil.copyfile(src, part)


def fetch(
    remote: RemoteFile,
    dest_dir: str | Path,
    *,
    mirror: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> tuple[Path, str]:
    """Download ``remote`` into ``dest_dir``; return (verified path, sha256).

    ``mirror`` replaces the official location: a base URL, or a local directory holding the files
    under their official names (an offline copy).
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.name
    part = dest_dir / (remote.name + ".part")
    # A verified copy is kept as a hard link: when a rerun (say, a changed mirror setting) makes
    # Snakemake delete the output, it is re-verified and linked back instead of downloaded.
    kept = dest_dir / ".verified" / remote.name
    if kept.exists():
        try:
            sha = verify(kept, remote)
        except ChecksumError:
            kept.unlink()
        else:
            if not final.exists():
                os.link(kept, final)
            return final, sha
    source = remote.located(mirror)
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        for attempt in range(retries + 1):
            try:
                _stream_http(source, part, remote.size, timeout)
                break
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if attempt == retries:
                    raise DownloadError(
                        f"{source}: failed after {retries + 1} attempts ({exc}); "
                        f"the partial file {part} is kept and a rerun resumes it"
                    ) from exc
                time.sleep(backoff * 2**attempt)
    else:
        _copy_local(Path(source.removeprefix("file://")), part)
    try:
        sha = verify(part, remote)
    except ChecksumError as exc:
        bad = dest_dir / (remote.name + ".bad")
        part.replace(bad)
        raise ChecksumError(
            f"{exc}. The file was moved aside to {bad}; delete it and rerun to download again, "
            "or check the mirror setting if this repeats."
        ) from exc
    part.replace(final)
    kept.parent.mkdir(exist_ok=True)
    if kept.exists():
        kept.unlink()
    os.link(final, kept)
    return final, sha
