"""A page per ReCoD run for ``snakemake --report``: what each loop retrieved and said.

Researchers read ReCoD runs by looking at them: for a few validation images, the target, the
image retrieved at each loop, the reference captions the prompt quoted and the description the
loop produced. One self-contained HTML file (thumbnails inline), so the report can carry it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.io import atomic_path

THUMBNAIL = 192  # pixels on the longer side


def thumbnail(path: str) -> str:
    """An inline ``<img>`` of the image at ``path`` (a placeholder if it cannot be read)."""
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
            img.thumbnail((THUMBNAIL, THUMBNAIL))
    except OSError as exc:
        return f"<div class='missing'>{html.escape(f'{path}: {exc}')}</div>"
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img src='data:image/jpeg;base64,{data}' alt='{html.escape(Path(path).name)}'>"


STYLE = """
body{font-family:sans-serif;margin:1em;max-width:1200px}
table{border-collapse:collapse;margin-bottom:2em}
td{border:1px solid #ccc;padding:6px;vertical-align:top}
td.img{width:200px;text-align:center}
.ref{color:#555;font-size:90%}
.missing{color:#a00}
"""


def render(
    title: str,
    descriptions: str | Path,
    images: str | Path,
    retrieval_images: str | Path,
    n_images: int,
) -> str:
    """The gallery of the first ``n_images`` described validation images."""
    table = pq.read_table(descriptions).to_pandas().sort_values(["image_id", "loop"])
    paths = _paths(images)
    retrieval = _paths(retrieval_images)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts += [f"<style>{STYLE}</style><h1>{html.escape(title)}</h1>"]
    for image_id in list(dict.fromkeys(table["image_id"]))[:n_images]:
        if image_id not in paths:
            raise CrossmodalError(f"{descriptions}: image {image_id} is not in {images}")
        parts.append(f"<h2>image {image_id}</h2><table>")
        parts.append(f"<tr><td class='img'>{thumbnail(paths[image_id])}<br>target</td><td>")
        for row in table[table["image_id"] == image_id].itertuples():
            parts.append(_loop_row(row, retrieval))
        parts.append("</td></tr></table>")
    return "\n".join(parts)


def _loop_row(row, retrieval: dict[int, str]) -> str:
    text = html.escape(row.text) or "<i>(empty)</i>"
    if row.loop == 0 or row.retrieved_id is None or row.retrieved_id != row.retrieved_id:
        return f"<p><b>loop {row.loop}</b> (base description): {text}</p>"
    rid = int(row.retrieved_id)
    picture = thumbnail(retrieval[rid]) if rid in retrieval else f"image {rid}"
    refs = "".join(f"<div class='ref'>“{html.escape(r)}”</div>" for r in row.reference)
    return (
        f"<table><tr><td class='img'>{picture}<br>retrieved {rid} (score {row.score:.3f})"
        f"</td><td><b>loop {row.loop}</b>: {text}{refs}</td></tr></table>"
    )


def _paths(images: str | Path) -> dict[int, str]:
    table = pq.read_table(images, columns=["image_id", "path"])
    return dict(
        zip(table.column("image_id").to_pylist(), table.column("path").to_pylist(), strict=True)
    )


def run_gallery(job) -> None:
    """The ``gallery`` stage (a :class:`crossmodal.stages.Gallery` job)."""
    page = render(job.title, job.descriptions, job.images, job.retrieval_images, job.n_images)
    with atomic_path(job.page) as tmp:
        tmp.write_text(page, encoding="utf-8")
