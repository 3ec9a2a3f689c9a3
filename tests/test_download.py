"""Downloads against a real local HTTP server: resume, checksums, mirrors."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from crossmodal.cli import main
from crossmodal.data.download import RemoteFile, fetch
from crossmodal.errors import ChecksumError, DownloadError

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, not a multiple of the chunk size


def remote(url: str, data: bytes = PAYLOAD, **kw) -> RemoteFile:
    return RemoteFile(
        name="blob.zip",
        url=url + "blob.zip",
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        **kw,
    )


def test_resumes_after_cut_connection(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    file_server.cut_after = 1 << 20
    file_server.cuts_left = 2
    path, sha = fetch(remote(file_server.url), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert sha == hashlib.sha256(PAYLOAD).hexdigest()
    ranges = [r for _, r in file_server.requests]
    # first request from zero, then two resumptions from where each cut left off
    assert ranges[0] is None
    assert ranges[1] == f"bytes={1 << 20}-"
    assert ranges[2] == f"bytes={2 << 20}-"
    assert not (tmp_path / "blob.zip.part").exists()


def test_partial_file_from_earlier_run_is_resumed(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    (tmp_path / "blob.zip.part").write_bytes(PAYLOAD[:5000])
    path, _ = fetch(remote(file_server.url), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert file_server.requests == [("blob.zip", "bytes=5000-")]


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    file_server.honour_range = False
    (tmp_path / "blob.zip.part").write_bytes(b"garbage-prefix")
    path, _ = fetch(remote(file_server.url), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_keeps_file_aside(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    wrong = RemoteFile("blob.zip", file_server.url + "blob.zip", md5="0" * 32)
    with pytest.raises(ChecksumError, match="md5") as info:
        fetch(wrong, tmp_path, backoff=0)
    assert "moved aside" in str(info.value)
    assert (tmp_path / "blob.zip.bad").read_bytes() == PAYLOAD
    assert not (tmp_path / "blob.zip").exists()


def test_truncated_download_fails_size_check(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD[:-10]  # server itself has a short file
    with pytest.raises(ChecksumError, match="size"):
        fetch(remote(file_server.url), tmp_path, backoff=0)
    assert not (tmp_path / "blob.zip").exists()


def test_gives_up_after_bounded_retries(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    file_server.cut_after = 0
    file_server.cuts_left = 100
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(remote(file_server.url), tmp_path, retries=2, backoff=0)
    assert len(file_server.requests) == 3


def test_http_error_is_reported(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(remote(file_server.url), tmp_path, backoff=0)


def test_mirror_url_and_local_folder(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    official = remote("http://example.invalid/")
    path, _ = fetch(official, tmp_path / "a", mirror=file_server.url)
    assert path.read_bytes() == PAYLOAD
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "blob.zip").write_bytes(PAYLOAD)
    path, _ = fetch(official, tmp_path / "b", mirror=str(offline))
    assert path.read_bytes() == PAYLOAD


def test_cli_records_checksum_of_first_download(file_server, tmp_path):
    """A file without a published checksum is pinned on first download, then enforced."""
    file_server.files["blob.zip"] = PAYLOAD
    manifest = tmp_path / "manifests" / "downloads.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"files": {"blob.zip": {"url": file_server.url + "blob.zip"}}}))
    args = ["download", "blob.zip", "--manifest", str(manifest), "--dest", str(tmp_path / "d")]
    assert main(args) == 0
    recorded = json.loads((manifest.parent / "recorded-checksums.json").read_text())
    assert recorded["blob.zip"] == {
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
        "size": len(PAYLOAD),
    }
    # the mirror now serves different bytes: the pinned checksum catches it
    file_server.files["blob.zip"] = PAYLOAD[::-1]
    (tmp_path / "d" / "blob.zip").unlink()  # a fresh machine: no local copy at all
    (tmp_path / "d" / ".verified" / "blob.zip").unlink()
    assert main(args) == 2
    assert (tmp_path / "d" / "blob.zip.bad").exists()


def test_verified_copy_is_reused_without_network(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    path, sha = fetch(remote(file_server.url), tmp_path, backoff=0)
    path.unlink()  # what Snakemake does to an output before rerunning its job
    n = len(file_server.requests)
    again, sha2 = fetch(remote(file_server.url), tmp_path, backoff=0)
    assert again.read_bytes() == PAYLOAD and sha2 == sha
    assert len(file_server.requests) == n  # no request: re-verified local copy
    # a kept copy that no longer verifies is discarded and downloaded again
    (tmp_path / ".verified" / "blob.zip").unlink()
    (tmp_path / ".verified" / "blob.zip").write_bytes(b"corrupted")
    again.unlink()
    fetch(remote(file_server.url), tmp_path, backoff=0)
    assert len(file_server.requests) == n + 1
