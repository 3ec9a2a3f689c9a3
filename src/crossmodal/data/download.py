"""Streaming, resumable, verified downloads.

A download streams into ``NAME.part`` with a progress bar. A cut connection is retried and the
transfer resumes from the bytes already on disk with an HTTP ``Range`` request. A ``.part`` that
is already complete (the process was killed while verifying) is recognised from the server's
``416`` answer and verified instead of failing every rerun. When the transfer is complete the
content is sanity-checked (an archive must start with its format's magic bytes, an HTML page or
``Content-Type: text/html`` is not a data file, the size must reach the manifest's ``min_size``)
and the size and checksums are checked against the manifest; a failure moves the file aside to
``NAME.bad`` (kept for inspection) and raises an error that says what to do. Only a verified
file is renamed to ``NAME``, so the final path existing means the bytes are right, and a
checksum is only ever recorded (see ``manifest.py``) from such a file.
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


class SuspiciousDownloadError(ChecksumError):
    """What arrived is not the data file: an HTML page, an empty body, wrong magic bytes."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set as the manifest describes it."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    min_size: int | None = None  # a floor when the exact size is not published
    # Where ``sha256``/``size`` come from when the manifest does not publish them: the file of
    # checksums recorded on an earlier first download (named in errors, so it can be reset).
    recorded_in: Path | None = None

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
            f"{remote.name}: size {size} bytes, {_expected_from(remote)} says {remote.size} "
            "(truncated or wrong file)"
        )
    if remote.md5 is not None:
        got = file_digest(path, "md5")
        if got != remote.md5:
            raise ChecksumError(f"{remote.name}: md5 {got}, manifest says {remote.md5}")
    sha = file_digest(path, "sha256")
    if remote.sha256 is not None and sha != remote.sha256:
        raise ChecksumError(
            f"{remote.name}: sha256 {sha}, {_expected_from(remote)} says {remote.sha256}"
        )
    return sha


def _expected_from(remote: RemoteFile) -> str:
    return str(remote.recorded_in) if remote.recorded_in is not None else "manifest"


# Leading bytes of each archive format, by the manifest name's suffix (longest suffix first).
_MAGIC: tuple[tuple[str, str, tuple[bytes, ...]], ...] = (
    (".tar.gz", "gzip", (b"\x1f\x8b",)),
    (".tgz", "gzip", (b"\x1f\x8b",)),
    (".gz", "gzip", (b"\x1f\x8b",)),
    # local file header, or the end-of-directory record of an empty zip
    (".zip", "zip", (b"PK\x03\x04", b"PK\x05\x06")),
)
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")


def content_problems(
    path: Path, name: str, content_type: str | None, min_size: int | None
) -> list[str]:
    """Why the bytes in ``path`` cannot be the data file ``name``; empty when they look right.

    Catches what a checksum cannot when none is published: an HTTP 200 that carries an error or
    login page, an empty or cut-short body.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(512)
    problems = []
    if size == 0:
        problems.append("the file is empty")
    elif min_size is not None and size < min_size:
        problems.append(f"{size} bytes, below the manifest's min_size {min_size}")
    lower = name.lower()
    is_markup_name = lower.endswith((".html", ".htm", ".xml"))
    looks_html = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_STARTS)
    if looks_html and not is_markup_name:
        problems.append(
            "it is an HTML/XML page, not the data file (open it to read the server's message)"
        )
    magic_ok = None
    for suffix, kind, magics in _MAGIC:
        if lower.endswith(suffix):
            magic_ok = head.startswith(magics)
            if size and not magic_ok and not looks_html:
                problems.append(f"it does not start like a {kind} file (first bytes {head[:8]!r})")
            break
    html_type = (content_type or "").split(";")[0].strip().lower() == "text/html"
    if html_type and not is_markup_name and not magic_ok and not looks_html:
        problems.append("the server sent it as Content-Type text/html")
    return problems


def _stream_http(url: str, part: Path, total_hint: int | None, timeout: float) -> str | None:
    """Append the rest of ``url`` to ``part``, resuming from its current size.

    Returns the response's Content-Type (None when the part was already complete).
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        if resp.status_code == 416 and have:
            full = _complete_length(resp.headers.get("Content-Range"))
            if have in (full, total_hint):
                return None  # a finished download (killed while verifying): verify it
            # The part is longer than the file, or the server does not say how long the file
            # is: the part cannot be trusted, so download from the start.
            part.unlink()
            return _stream_http(url, part, total_hint, timeout)
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
        return resp.headers.get("Content-Type")


def _complete_length(content_range: str | None) -> int | None:
    """N from a 416's ``Content-Range: bytes */N`` (the full length of the file), else None."""
    if not content_range:
        return None
    unit, _, spec = content_range.strip().partition(" ")
    _, _, length = spec.partition("/")
    if unit.lower() != "bytes" or not length.strip().isdigit():
        return None
    return int(length)


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
            if content_problems(kept, remote.name, None, remote.min_size):
                raise ChecksumError("kept copy is not the data file")
            sha = verify(kept, remote)
        except ChecksumError:
            # Not (or no longer) right: forget it, and the final name if it is the same file,
            # so the final path never outlives the verification it stands for.
            if final.exists() and os.path.samefile(final, kept):
                final.unlink()
            kept.unlink()
        else:
            if not final.exists():
                os.link(kept, final)
            return final, sha
    source = remote.located(mirror)
    scheme = urlparse(source).scheme
    content_type = None
    if scheme in ("http", "https"):
        for attempt in range(retries + 1):
            try:
                content_type = _stream_http(source, part, remote.size, timeout)
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
    sha = _accept(part, remote, source, content_type)
    part.replace(final)
    kept.parent.mkdir(exist_ok=True)
    if kept.exists():
        kept.unlink()
    os.link(final, kept)
    return final, sha


def _accept(part: Path, remote: RemoteFile, source: str, content_type: str | None) -> str:
    """Sanity-check and verify a finished transfer; on failure move it to ``NAME.bad`` and raise
    an error whose advice fits the cause. Returns the sha256 of an accepted file."""
    bad = part.with_name(remote.name + ".bad")
    problems = content_problems(part, remote.name, content_type, remote.min_size)
    if problems:
        part.replace(bad)
        raise SuspiciousDownloadError(
            f"{source} did not deliver {remote.name}: {'; '.join(problems)}. Nothing was "
            f"recorded; the response was moved aside to {bad}. Check the URL (or the mirror "
            "setting) and that the server is up, then rerun to download again."
        )
    try:
        return verify(part, remote)
    except ChecksumError as exc:
        part.replace(bad)
        if remote.recorded_in is not None:
            advice = (
                f"The expected value was recorded by an earlier first download in "
                f"{remote.recorded_in}. If that recording is wrong (say it pinned an error "
                f"page), remove the {remote.name!r} entry from that file and rerun: the next "
                "verified download records it again. Otherwise the server now serves "
                "different bytes: check the URL or the mirror setting."
            )
        else:
            advice = (
                "Rerun to download again (the moved-aside copy is not reused); if this "
                "repeats, the server or mirror serves a different file: check the URL "
                "or the mirror setting."
            )
        raise ChecksumError(f"{exc}. The download was moved aside to {bad}. {advice}") from exc
