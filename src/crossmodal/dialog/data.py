"""PhotoChat: JSON shards -> dialogues.parquet; photos fetched (or found in a mirror) with a status
table that lists every photo that could not be had.

Reference layout (google-research/google-research, ``multimodalchat/photochat``): one folder per
split (``train/train_00.json`` ... ``train_20.json``, ``dev/dev_00.json``, ``dev_01.json``,
``test/test_00.json``, ``test_01.json``), each a JSON list of dialogues::

    {"dialogue": [{"message": str, "share_photo": bool, "user_id": 0 | 1}, ...],
     "dialogue_id": int, "photo_description": str, "photo_url": str}

The test split has 1,000 dialogues (ids 0-499 in test_00.json, 500-999 in test_01.json); its
1,000 photos are the retrieval candidates. The photos are Flickr URLs, many of them dead by now.

Prepared table, one row per dialogue: ``split``, ``dialogue_id``, ``turns`` (``User {id}:
{message}`` before the first shared photo, as VisualDialog's data_processor.py:109-115),
``photo_description``, ``photo_url`` and ``photo_id`` (the URL's file name without extension,
Flickr's ``{photo}_{secret}_o``, so the same photo shared in two dialogues is one candidate).

Photos (``img2dataset``-style): each URL is fetched with a timeout and a bounded number of
retries (connection errors, timeouts and 5xx/429 answers are retried with backoff; other 4xx are
final), the body must decode as an image, and Flickr's "photo unavailable" placeholder (a
redirect to ``photo_unavailable``) counts as dead. Every photo gets a row in the status table
(``ok``, ``cached``, ``mirror`` or ``failed`` with the error); failed photos are counted and
listed, and the dialogues that share them are excluded downstream with that count, never dropped
silently. With ``data.mirrors.photochat`` set, photos are read from that folder instead
(``{photo_id}.jpg``, ``.jpeg`` or ``.png``); a photo missing there is a ``failed`` row.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from crossmodal.dialog.descriptor import dialogue_lines
from crossmodal.errors import DataFormatError
from crossmodal.io import atomic_path, write_table

log = logging.getLogger(__name__)

RAW = "https://raw.githubusercontent.com/google-research/google-research/master"
SHARDS = {"train": 21, "dev": 2, "test": 2}


def shard_names(split: str) -> list[str]:
    """The reference's shard files of a split, e.g. ``test/test_00.json``."""
    return [f"{split}/{split}_{i:02d}.json" for i in range(SHARDS[split])]


def shard_url(name: str) -> str:
    return f"{RAW}/multimodalchat/photochat/{name}"


DIALOGUES_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("dialogue_id", pa.int64()),
        ("turns", pa.list_(pa.string())),
        ("photo_description", pa.string()),
        ("photo_url", pa.string()),
        ("photo_id", pa.string()),
    ]
)
PHOTOS_SCHEMA = pa.schema(
    [
        ("photo_id", pa.string()),
        ("url", pa.string()),
        ("status", pa.string()),  # ok | cached | mirror | failed
        ("path", pa.string()),  # "" when failed
        ("attempts", pa.int32()),
        ("error", pa.string()),  # "" unless failed
    ]
)
AVAILABLE = ("ok", "cached", "mirror")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# --- dialogues -----------------------------------------------------------------------------------


def photo_id_of(url: str) -> str:
    """The URL's file name without its extension (Flickr: ``{photo}_{secret}_o``)."""
    name = PurePosixPath(urlparse(url).path).name
    stem = name.rsplit(".", 1)[0]
    if not stem:
        raise DataFormatError(f"photo URL {url!r} has no file name to name the photo by")
    return stem


def _entry(entry: Any, where: str) -> dict[str, Any]:
    keys = ("dialogue", "dialogue_id", "photo_description", "photo_url")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise DataFormatError(f"{where}: expected an object with keys {list(keys)}")
    turns = entry["dialogue"]
    if not isinstance(turns, list) or any(
        not isinstance(t, dict) or {"message", "share_photo", "user_id"} - set(t) for t in turns
    ):
        raise DataFormatError(f"{where}: 'dialogue' must be a list of message/share_photo/user_id")
    return entry


def read_shards(files: Sequence[Path], split: str) -> tuple[pa.Table, dict[str, str]]:
    """One row per dialogue of the split's shards, and the dialogues left out with the reason
    (a dialogue in which no photo is shared has no retrieval target)."""
    rows: dict[str, list] = {name: [] for name in DIALOGUES_SCHEMA.names}
    seen: dict[int, str] = {}
    left_out: dict[str, str] = {}
    for path in files:
        try:
            entries = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc}); download it again") from exc
        if not isinstance(entries, list):
            raise DataFormatError(f"{path}: expected a JSON list of dialogues")
        for pos, raw in enumerate(entries):
            entry = _entry(raw, f"{path} entry {pos}")
            dialogue_id = int(entry["dialogue_id"])
            if dialogue_id in seen:
                raise DataFormatError(
                    f"{path} entry {pos}: dialogue_id {dialogue_id} also in {seen[dialogue_id]}; "
                    "the shards of one split must not overlap"
                )
            seen[dialogue_id] = str(path)
            if not any(t["share_photo"] for t in entry["dialogue"]):
                left_out[str(dialogue_id)] = "no turn shares the photo"
                continue
            rows["split"].append(split)
            rows["dialogue_id"].append(dialogue_id)
            rows["turns"].append(dialogue_lines(entry["dialogue"]))
            rows["photo_description"].append(str(entry["photo_description"]))
            rows["photo_url"].append(str(entry["photo_url"]))
            rows["photo_id"].append(photo_id_of(str(entry["photo_url"])))
    table = pa.table(rows, schema=DIALOGUES_SCHEMA).sort_by("dialogue_id")
    return table, left_out


# --- photos --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchSettings:
    retries: int = 2  # attempts after the first
    timeout: float = 10.0  # seconds per attempt
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    workers: int = 16
    max_bytes: int = 50 << 20


@dataclass(frozen=True)
class PhotoStatus:
    photo_id: str
    url: str
    status: str
    path: str
    attempts: int
    error: str


class _Final(Exception):
    """A failure that retrying cannot fix (404, not an image, a placeholder)."""


def _download(url: str, settings: FetchSettings) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "crossmodal-photochat/1"})
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as resp:
            if "photo_unavailable" in resp.geturl():
                raise _Final(f"redirected to a placeholder ({resp.geturl()})")
            body = resp.read(settings.max_bytes + 1)
            length = resp.headers.get("Content-Length")
            if length is not None and len(body) < int(length) <= settings.max_bytes:
                raise OSError(f"transfer cut after {len(body)} of {length} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code in (429,) or exc.code >= 500:
            raise OSError(f"HTTP {exc.code}") from None
        raise _Final(f"HTTP {exc.code}") from None
    if len(body) > settings.max_bytes:
        raise _Final(f"larger than {settings.max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(body)) as im:
            im.verify()
    except Exception as exc:  # any decoder error means the body is not a usable image
        raise _Final(f"not an image ({type(exc).__name__}: {exc})") from None
    return body


def fetch_photo(
    photo_id: str,
    url: str,
    into: Path,
    settings: FetchSettings,
    sleep: Callable[[float], None] = time.sleep,
) -> PhotoStatus:
    """One photo into ``into/{photo_id}.jpg`` (kept if already there), with retries."""
    target = into / f"{photo_id}.jpg"
    if target.exists():
        return PhotoStatus(photo_id, url, "cached", str(target), 0, "")
    error, attempts = "", 0
    for attempt in range(settings.retries + 1):
        attempts = attempt + 1
        try:
            body = _download(url, settings)
        except _Final as exc:
            error = str(exc)
            break
        except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, cut bodies
            error = f"{type(exc).__name__}: {exc}"
            if attempt < settings.retries:
                sleep(settings.backoff * 2**attempt)
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(body)
        return PhotoStatus(photo_id, url, "ok", str(target), attempts, "")
    return PhotoStatus(photo_id, url, "failed", "", attempts, error)


def fetch_photos(photos: dict[str, str], into: Path, settings: FetchSettings) -> list[PhotoStatus]:
    """Every photo (photo_id -> URL) fetched in parallel; one status per photo, in id order."""
    into.mkdir(parents=True, exist_ok=True)
    ids = sorted(photos)
    with ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
        return list(pool.map(lambda i: fetch_photo(i, photos[i], into, settings), ids))


def mirror_photos(photos: dict[str, str], mirror: Path) -> list[PhotoStatus]:
    """Photos found in a mirror folder (``{photo_id}.jpg|.jpeg|.png``); missing ones failed."""
    if not mirror.is_dir():
        raise DataFormatError(
            f"data.mirrors.photochat: {mirror} is not a folder; point it at the folder that "
            "holds the photos as {photo_id}.jpg"
        )
    out = []
    for photo_id in sorted(photos):
        found = [
            mirror / f"{photo_id}{s}"
            for s in IMAGE_SUFFIXES
            if (mirror / f"{photo_id}{s}").is_file()
        ]
        if found:
            out.append(PhotoStatus(photo_id, photos[photo_id], "mirror", str(found[0]), 0, ""))
        else:
            out.append(
                PhotoStatus(photo_id, photos[photo_id], "failed", "", 0, f"not in mirror {mirror}")
            )
    return out


def status_table(statuses: Sequence[PhotoStatus]) -> pa.Table:
    return pa.table(
        {name: [getattr(s, name) for s in statuses] for name in PHOTOS_SCHEMA.names},
        schema=PHOTOS_SCHEMA,
    )


def status_summary(statuses: Sequence[PhotoStatus]) -> dict[str, Any]:
    """Counts per status and every failed photo with its error (the table's provenance)."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    failed = {s.photo_id: s.error for s in statuses if s.status == "failed"}
    return {"photos": len(statuses), "counts": counts, "failed": failed}


def available_photos(photos_table: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(photo_id -> path of every photo that can be read, photo_id -> error of every one that
    cannot) from a status table."""
    table = pq.read_table(photos_table).to_pylist()
    ok = {r["photo_id"]: r["path"] for r in table if r["status"] in AVAILABLE}
    failed = {r["photo_id"]: r["error"] for r in table if r["status"] not in AVAILABLE}
    return ok, failed


def read_photo(path: str) -> Image.Image:
    """A photo of the status table, decoded fully, or an error naming it: a photo that was
    fetched (or found in the mirror) and is unreadable now was changed on disk since."""
    from crossmodal.images import load_image

    loaded = load_image(path, max_pixels=None)
    if loaded.error:
        raise DataFormatError(
            f"{path}: {loaded.error}; the photo status table lists it as available: delete the "
            "file and the status table, and fetch the photos again"
        )
    return loaded.image


def excluded_dialogues(dialogues: pa.Table, failed: dict[str, str]) -> dict[str, str]:
    """dialogue_id -> reason for every dialogue whose photo could not be had."""
    ids = dialogues.column("dialogue_id").to_pylist()
    photo = dialogues.column("photo_id").to_pylist()
    return {
        str(d): f"photo {p} unavailable: {failed[p]}"
        for d, p in zip(ids, photo, strict=True)
        if p in failed
    }


# --- stages --------------------------------------------------------------------------------------


def run_prepare_dialogs(job) -> pa.Table:
    """The ``dialog-prepare`` stage: a split's shards -> dialogues.parquet."""
    table, left_out = read_shards(job.shards, job.split)
    provenance = {
        "stage": "dialog-prepare",
        "split": job.split,
        "shards": [str(p) for p in job.shards],
        "dialogues": table.num_rows,
        "left_out": left_out,
    }
    write_table(job.dialogues, table, provenance)
    if left_out:
        log.warning("%d dialogue(s) share no photo and are left out", len(left_out))
    log.info("%d %s dialogues -> %s", table.num_rows, job.split, job.dialogues)
    return table


def run_dialog_photos(job) -> list[PhotoStatus]:
    """The ``dialog-photos`` stage: every photo of the dialogues tables, fetched or mirrored."""
    photos: dict[str, str] = {}
    for path in job.dialogues:
        t = pq.read_table(path, columns=["photo_id", "photo_url"]).to_pylist()
        photos.update({r["photo_id"]: r["photo_url"] for r in t})
    if job.mirror:
        statuses = mirror_photos(photos, Path(job.mirror))
    else:
        statuses = fetch_photos(photos, Path(job.folder), FetchSettings(**job.fetch))
    summary = status_summary(statuses)
    write_table(job.photos, status_table(statuses), {"stage": "dialog-photos", **summary})
    if summary["failed"]:
        log.warning(
            "%d of %d photos could not be had (listed in %s); their dialogues are excluded",
            len(summary["failed"]),
            len(statuses),
            job.photos,
        )
    return statuses
