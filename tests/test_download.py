"""Downloads against a real local HTTP server: resume, checksums, mirrors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from crossmodal.cli import main
from crossmodal.data.download import RemoteFile, SuspiciousDownloadError, fetch
from crossmodal.data.manifest import load_remote, record_first_download
from crossmodal.errors import ChecksumError, DataFormatError, DownloadError

# A few chunks, not a multiple of the chunk size; starts like a zip, as the name says.
PAYLOAD = b"PK\x03\x04" + os.urandom(3 * (1 << 20) + 12341)


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
    args = [
        "download",
        "--name",
        "blob.zip",
        "--manifest",
        str(manifest),
        "--file",
        str(tmp_path / "d" / "blob.zip"),
        "--retries",
        "1",
        "--timeout",
        "5",
    ]
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


# --- content checks and recorded checksums ----------------------------------------------------

HTML_ERROR = b"<!DOCTYPE html>\n<html><body><h1>503 Service Unavailable</h1></body></html>\n"


def write_manifest(tmp_path, url: str, **entries) -> Path:
    """A manifest (in its own folder, like resources/manifests/) listing ``entries``."""
    manifest = tmp_path / "manifests" / "downloads.json"
    manifest.parent.mkdir(exist_ok=True)
    files = {name: {"url": url + name, **extra} for name, extra in entries.items()}
    manifest.write_text(json.dumps({"files": files}))
    return manifest


def download(manifest: Path, name: str, dest: Path) -> tuple[Path, str]:
    """What the download stage does: look up, fetch, pin a first checksum."""
    remote = load_remote(manifest, name)
    path, sha = fetch(remote, dest, backoff=0)
    record_first_download(manifest, remote, sha, path.stat().st_size)
    return path, sha


def test_error_page_with_http_200_is_never_trusted(file_server, tmp_path):
    name = "questions.json.zip"
    file_server.files[name] = HTML_ERROR
    file_server.content_types[name] = "text/html; charset=utf-8"
    manifest = write_manifest(tmp_path, file_server.url, **{name: {}})
    dest = tmp_path / "d"
    with pytest.raises(SuspiciousDownloadError, match="HTML") as info:
        download(manifest, name, dest)
    msg = str(info.value)
    assert "Nothing was recorded" in msg and str(dest / (name + ".bad")) in msg
    assert (dest / (name + ".bad")).read_bytes() == HTML_ERROR
    assert not (dest / name).exists() and not (dest / ".verified" / name).exists()
    assert not (manifest.parent / "recorded-checksums.json").exists()
    # the server recovers: the rerun the message advises downloads and pins the real file
    file_server.files[name] = PAYLOAD
    file_server.content_types[name] = "application/zip"
    path, sha = download(manifest, name, dest)
    assert path.read_bytes() == PAYLOAD
    recorded = json.loads((manifest.parent / "recorded-checksums.json").read_text())
    assert recorded[name] == {"sha256": sha, "size": len(PAYLOAD)}


@pytest.mark.parametrize(
    "name,body,content_type,needle",
    [
        ("aokvqa.tar.gz", b"Not Found", "text/plain", "does not start like a gzip file"),
        ("blob.zip", b"", None, "empty"),
        ("notes.txt", b"Access denied", "text/html", "Content-Type text/html"),
        ("blob.zip", b"  <html><head></head></html>", "text/plain", "HTML"),
    ],
)
def test_bodies_that_cannot_be_the_file_are_refused(
    file_server, tmp_path, name, body, content_type, needle
):
    file_server.files[name] = body
    if content_type:
        file_server.content_types[name] = content_type
    manifest = write_manifest(tmp_path, file_server.url, **{name: {}})
    with pytest.raises(SuspiciousDownloadError, match=needle):
        download(manifest, name, tmp_path / "d")
    assert not (manifest.parent / "recorded-checksums.json").exists()


def test_archive_with_right_magic_passes_despite_a_wrong_content_type(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    file_server.content_types["blob.zip"] = "text/html"  # a misconfigured server
    manifest = write_manifest(tmp_path, file_server.url, **{"blob.zip": {}})
    path, _ = download(manifest, "blob.zip", tmp_path / "d")
    assert path.read_bytes() == PAYLOAD


def test_min_size_catches_a_short_body(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD[:100]
    manifest = write_manifest(tmp_path, file_server.url, **{"blob.zip": {"min_size": 1 << 20}})
    with pytest.raises(SuspiciousDownloadError, match="100 bytes, below the manifest's min_size"):
        download(manifest, "blob.zip", tmp_path / "d")


def test_wrong_recorded_checksum_names_its_file_and_the_reset_works(file_server, tmp_path):
    """An error page pinned by an earlier version: the real file must not fail forever."""
    manifest = write_manifest(tmp_path, file_server.url, **{"blob.zip": {}})
    recorded_file = manifest.parent / "recorded-checksums.json"
    pinned = {"sha256": hashlib.sha256(HTML_ERROR).hexdigest(), "size": len(HTML_ERROR)}
    recorded_file.write_text(json.dumps({"blob.zip": pinned, "other.zip": pinned}))
    dest = tmp_path / "d"
    (dest / ".verified").mkdir(parents=True)
    (dest / ".verified" / "blob.zip").write_bytes(HTML_ERROR)  # its verified copy, too
    os.link(dest / ".verified" / "blob.zip", dest / "blob.zip")
    file_server.files["blob.zip"] = PAYLOAD
    with pytest.raises(ChecksumError) as info:
        download(manifest, "blob.zip", dest)
    msg = str(info.value)
    assert str(recorded_file) in msg and "remove the 'blob.zip' entry" in msg
    assert f"moved aside to {dest / 'blob.zip.bad'}" in msg
    assert (dest / "blob.zip.bad").read_bytes() == PAYLOAD
    assert not (dest / "blob.zip").exists()  # the pinned error page is not left as the output
    # follow the advice
    recorded = json.loads(recorded_file.read_text())
    del recorded["blob.zip"]
    recorded_file.write_text(json.dumps(recorded))
    path, sha = download(manifest, "blob.zip", dest)
    assert path.read_bytes() == PAYLOAD
    assert json.loads(recorded_file.read_text()) == {
        "blob.zip": {"sha256": sha, "size": len(PAYLOAD)},
        "other.zip": pinned,
    }


def test_recorded_size_below_min_size_is_reported_before_downloading(file_server, tmp_path):
    manifest = write_manifest(tmp_path, file_server.url, **{"blob.zip": {"min_size": 1000}})
    (manifest.parent / "recorded-checksums.json").write_text(
        json.dumps({"blob.zip": {"sha256": "0" * 64, "size": 80}})
    )
    with pytest.raises(DataFormatError, match="remove that entry"):
        load_remote(manifest, "blob.zip")


def test_manifest_entry_without_url_is_a_clear_error(tmp_path):
    manifest = write_manifest(tmp_path, "http://127.0.0.1:9/")
    manifest.write_text(json.dumps({"files": {"blob.zip": {"md5": "0" * 32}}}))
    with pytest.raises(DataFormatError, match="needs a 'url'"):
        load_remote(manifest, "blob.zip")


# --- a complete .part (killed while verifying) ------------------------------------------------


def test_complete_part_is_verified_not_refetched(file_server, tmp_path):
    """No size in the manifest (as for COCO): the 416's Content-Range says the part is whole."""
    file_server.files["blob.zip"] = PAYLOAD
    (tmp_path / "blob.zip.part").write_bytes(PAYLOAD)
    no_size = RemoteFile("blob.zip", file_server.url + "blob.zip", md5=remote("").md5)
    path, sha = fetch(no_size, tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD and sha == hashlib.sha256(PAYLOAD).hexdigest()
    assert file_server.requests == [("blob.zip", f"bytes={len(PAYLOAD)}-")]
    assert not (tmp_path / "blob.zip.part").exists()


def test_complete_part_known_from_the_manifest_size(file_server, tmp_path):
    file_server.files["blob.zip"] = PAYLOAD
    file_server.length_on_416 = False
    (tmp_path / "blob.zip.part").write_bytes(PAYLOAD)
    path, _ = fetch(remote(file_server.url), tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD and len(file_server.requests) == 1


@pytest.mark.parametrize("length_on_416", [True, False])
def test_part_that_cannot_be_trusted_is_downloaded_again(file_server, tmp_path, length_on_416):
    """A part longer than the file, or a 416 that gives no length: start from zero."""
    file_server.files["blob.zip"] = PAYLOAD
    file_server.length_on_416 = length_on_416
    extra = b"junk" if length_on_416 else b""
    (tmp_path / "blob.zip.part").write_bytes(PAYLOAD + extra)
    no_size = RemoteFile("blob.zip", file_server.url + "blob.zip", md5=remote("").md5)
    path, _ = fetch(no_size, tmp_path, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in file_server.requests][-1] is None  # the last request: from zero
