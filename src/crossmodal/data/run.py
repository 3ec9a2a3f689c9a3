"""The data stages as jobs: download, extract, demo world, prepared tables."""

from __future__ import annotations

import logging

from crossmodal import stages
from crossmodal.errors import CrossmodalError
from crossmodal.io import write_json

log = logging.getLogger(__name__)


def run_download(job: stages.Download) -> None:
    from crossmodal.data.download import fetch
    from crossmodal.data.manifest import load_remote, record_first_download

    remote = load_remote(job.manifest, job.name)
    if job.file.name != job.name:
        raise CrossmodalError(f"--file {job.file} must be named {job.name}")
    path, sha = fetch(
        remote, job.file.parent, mirror=job.mirror, retries=job.retries, timeout=job.timeout
    )
    if record_first_download(job.manifest, remote, sha, path.stat().st_size):
        log.warning(
            "%s has no published checksum; recorded sha256 %s in %s (commit it to pin)",
            job.name,
            sha,
            job.manifest.parent,
        )
    log.info("verified %s (sha256 %s)", path, sha)


def run_extract(job: stages.Extract) -> None:
    from crossmodal.data.extract import safe_extract
    from crossmodal.data.manifest import extraction_limit

    limit = extraction_limit(job.manifest, job.archive.name)
    placed = safe_extract(job.archive, job.into, max_bytes=limit)
    write_json(job.done, {"archive": str(job.archive), "placed": [str(p) for p in placed]})
    log.info("extracted %s into %s", job.archive, job.into)


def run_make_demo(job: stages.MakeDemo) -> None:
    from crossmodal.data.demo import make_demo_world

    width, height = job.image_size
    counts = make_demo_world(
        job.root, seed=job.seed, n_train=job.n_train, n_val=job.n_val, image_size=(width, height)
    )
    write_json(job.done, counts)
    log.info("demo world in %s: %s", job.root, counts)


def run_prepare_collection(job: stages.PrepareCollection) -> None:
    from crossmodal.data.prepare import prepare_collection

    n_img, n_cap = prepare_collection(job.image_dir, job.captions_json, job.images, job.captions)
    log.info("%d images, %d captions", n_img, n_cap)


def run_prepare_questions(job: stages.PrepareQuestions) -> None:
    from crossmodal.data.prepare import prepare_aokvqa, prepare_okvqa

    if job.format == "okvqa":
        if job.annotations_json is None:
            raise CrossmodalError("--annotations-json is required for --format okvqa")
        n = prepare_okvqa(job.questions_json, job.annotations_json, job.questions)
    elif job.format == "aokvqa":
        n = prepare_aokvqa(job.questions_json, job.questions)
    else:
        raise CrossmodalError(f"--format {job.format!r}: choose okvqa or aokvqa")
    log.info("%d questions -> %s", n, job.questions)
