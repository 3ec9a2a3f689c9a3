"""The ``crossmodal`` command line: one subcommand per pipeline stage.

Snakemake rules call these commands; each reads files and writes files, so every stage can be run
by hand too. Errors that are the user's to fix print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from crossmodal.errors import CrossmodalError

log = logging.getLogger("crossmodal")

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register ``func`` as subcommand ``name`` whose arguments ``configure`` declares."""

    def wrap(func: Callable) -> Callable:
        COMMANDS[name] = (configure, func)
        return func

    return wrap


# --- data -----------------------------------------------------------------------------------


def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="file name as listed in the manifest, e.g. val2014.zip")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--dest", required=True, type=Path, help="folder the file lands in")
    p.add_argument("--mirror", default=None, help="base URL or local folder replacing the URL")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0)


@command("download", _download_args)
def _download(a: argparse.Namespace) -> None:
    """Download one manifest file (resume, verify checksum)."""
    from crossmodal.data.download import fetch
    from crossmodal.data.manifest import load_remote, record_first_download

    remote = load_remote(a.manifest, a.name)
    path, sha = fetch(remote, a.dest, mirror=a.mirror, retries=a.retries, timeout=a.timeout)
    if record_first_download(a.manifest, remote, sha, path.stat().st_size):
        log.warning(
            "%s has no published checksum; recorded sha256 %s in %s (commit it to pin)",
            a.name,
            sha,
            a.manifest.parent,
        )
    log.info("verified %s (sha256 %s)", path, sha)


def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", type=Path)
    p.add_argument("--into", required=True, type=Path)
    p.add_argument("--done", type=Path, help="marker file written after a full extraction")


@command("extract", _extract_args)
def _extract(a: argparse.Namespace) -> None:
    """Extract an archive safely (no entry outside the target, nothing half-done)."""
    from crossmodal.data.extract import safe_extract
    from crossmodal.io import write_json

    placed = safe_extract(a.archive, a.into)
    if a.done:
        write_json(a.done, {"archive": str(a.archive), "placed": [str(p) for p in placed]})
    log.info("extracted %s into %s", a.archive, a.into)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--image-size", type=int, nargs=2, default=(512, 384))
    p.add_argument("--done", type=Path)


@command("make-demo", _demo_args)
def _make_demo(a: argparse.Namespace) -> None:
    """Generate the seeded demo world in COCO / OK-VQA layout."""
    from crossmodal.data.demo import make_demo_world
    from crossmodal.io import write_json

    counts = make_demo_world(
        a.root, seed=a.seed, n_train=a.n_train, n_val=a.n_val, image_size=tuple(a.image_size)
    )
    if a.done:
        write_json(a.done, counts)
    log.info("demo world in %s: %s", a.root, counts)


def _collection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-dir", required=True, type=Path)
    p.add_argument("--captions", required=True, type=Path, help="COCO captions JSON")
    p.add_argument("--images-out", required=True, type=Path)
    p.add_argument("--captions-out", required=True, type=Path)


@command("prepare-collection", _collection_args)
def _prepare_collection(a: argparse.Namespace) -> None:
    """COCO captions JSON + image folder -> images.parquet, captions.parquet."""
    from crossmodal.data.prepare import prepare_collection

    n_img, n_cap = prepare_collection(a.image_dir, a.captions, a.images_out, a.captions_out)
    log.info("%d images, %d captions", n_img, n_cap)


def _questions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=("okvqa", "aokvqa"))
    p.add_argument("--questions", required=True, type=Path)
    p.add_argument("--annotations", type=Path, help="OK-VQA annotations JSON")
    p.add_argument("--out", required=True, type=Path)


@command("prepare-questions", _questions_args)
def _prepare_questions(a: argparse.Namespace) -> None:
    """OK-VQA or A-OKVQA files -> questions.parquet."""
    from crossmodal.data.prepare import prepare_aokvqa, prepare_okvqa

    if a.format == "okvqa":
        if a.annotations is None:
            raise CrossmodalError("--annotations is required for --format okvqa")
        n = prepare_okvqa(a.questions, a.annotations, a.out)
    else:
        n = prepare_aokvqa(a.questions, a.out)
    log.info("%d questions -> %s", n, a.out)


# --- features and indexes -------------------------------------------------------------------


def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder-spec", required=True, help="JSON config entry of the encoder")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))


def _encoder(a: argparse.Namespace):
    import json

    from crossmodal.encoders import build_encoder

    return build_encoder(json.loads(a.encoder_spec), device=a.device, precision=a.precision)


def _features_args(p: argparse.ArgumentParser) -> None:
    _encoder_args(p)
    p.add_argument("--images", required=True, type=Path, help="images.parquet")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--report", type=Path, help="skip report (default: OUT with .skips.json)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size")
    p.add_argument("--max-skip-fraction", type=float, default=0.0)


@command("extract-features", _features_args)
def _extract_features(a: argparse.Namespace) -> None:
    """images.parquet -> L2-normalised image features in Parquet (+ skip report)."""
    import os

    from crossmodal.features import extract_image_features

    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    extract_image_features(
        _encoder(a),
        a.images,
        a.out,
        batch_size=a.batch_size,
        workers=a.workers,
        draft=not a.no_draft,
        dtype=a.dtype,
        max_skip_fraction=a.max_skip_fraction,
        report_path=a.report,
    )


def _text_features_args(p: argparse.ArgumentParser) -> None:
    _encoder_args(p)
    p.add_argument("--table", required=True, type=Path, help="questions or captions Parquet")
    p.add_argument("--id-column", required=True)
    p.add_argument("--text-column", required=True)
    p.add_argument("--out", required=True, type=Path)


@command("extract-text-features", _text_features_args)
def _extract_text_features(a: argparse.Namespace) -> None:
    """One text column of a table (questions, captions) -> text features in Parquet."""
    from crossmodal.features import extract_text_features

    n = extract_text_features(
        _encoder(a),
        a.table,
        a.out,
        id_column=a.id_column,
        text_column=a.text_column,
        dtype=a.dtype,
    )
    log.info("%d texts encoded -> %s", n, a.out)


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--params", default="{}", help="JSON: kind, nlist, nprobe, hnsw_m, ...")


@command("build-index", _index_args)
def _build_index(a: argparse.Namespace) -> None:
    """Features Parquet -> FAISS index (flat, ivf or hnsw) with ids mapped to image_id."""
    import json

    from crossmodal.features import read_embeddings
    from crossmodal.index import IndexParams, build_index, save_index
    from crossmodal.io import read_provenance

    params = IndexParams(**json.loads(a.params))
    ids, vectors = read_embeddings(a.features)
    index = build_index(vectors, ids, params)
    meta = {
        "params": params.__dict__,
        "features": str(a.features),
        "features_provenance": read_provenance(a.features),
    }
    save_index(index, a.out, meta)
    log.info("%s index of %d vectors -> %s", params.kind, index.ntotal, a.out)


# --- descriptions (ReCoD) --------------------------------------------------------------------


def _describe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vlm-spec", required=True, help="JSON config entry of the VLM")
    p.add_argument("--settings", required=True, help="JSON: method, n_descriptions, ...")
    p.add_argument("--images", required=True, type=Path, help="target collection images.parquet")
    p.add_argument("--questions", type=Path, help="describe only images these questions ask about")
    p.add_argument("--limit", type=int, default=None, help="first N target images only")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--journal", required=True, type=Path)
    p.add_argument("--ledger", required=True, type=Path)
    p.add_argument("--export", type=Path, help="reference-code JSON layout")
    p.add_argument("--encoder-spec", help="JSON encoder entry (ReCoD retrieval)")
    p.add_argument("--index", type=Path, help="FAISS index of the retrieval collection")
    p.add_argument("--retrieval-images", type=Path)
    p.add_argument("--retrieval-captions", type=Path)
    p.add_argument("--chunk", type=int, default=64, help="requests journalled per chunk")


@command("describe", _describe_args)
def _describe(a: argparse.Namespace) -> None:
    """Image descriptions with or without ReCoD (base, recod, recod_img), journalled."""
    import json

    from crossmodal.recod.loop import DescribeSettings
    from crossmodal.recod.stage import run_describe, target_images

    settings = DescribeSettings(**json.loads(a.settings))
    retrieval = None
    if settings.method != "base":
        needed = {
            "--encoder-spec": a.encoder_spec,
            "--index": a.index,
            "--retrieval-images": a.retrieval_images,
            "--retrieval-captions": a.retrieval_captions,
        }
        missing = [flag for flag, value in needed.items() if value is None]
        if missing:
            raise CrossmodalError(f"method {settings.method} needs {', '.join(missing)}")
        retrieval = {
            "encoder_spec": json.loads(a.encoder_spec),
            "index": a.index,
            "images": a.retrieval_images,
            "captions": a.retrieval_captions,
        }
    rows = run_describe(
        vlm_spec=json.loads(a.vlm_spec),
        settings=settings,
        targets=target_images(a.images, a.questions, a.limit),
        out=a.out,
        journal_path=a.journal,
        ledger_path=a.ledger,
        export_path=a.export,
        retrieval=retrieval,
        chunk=a.chunk,
    )
    log.info("%d descriptions -> %s", len(rows), a.out)


def _tiny_vlm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for the model")
    p.add_argument("--arch", default="llava", choices=("llava", "qwen2_vl"))
    p.add_argument("--seed", type=int, default=0)


@command("make-tiny-vlm", _tiny_vlm_args)
def _make_tiny_vlm(a: argparse.Namespace) -> None:
    """Build a tiny random-weight VLM folder (tests and the demo; its text is noise)."""
    from crossmodal.generation import tiny

    builder = tiny.build_tiny_llava if a.arch == "llava" else tiny.build_tiny_qwen2_vl
    builder(a.out, seed=a.seed)
    log.info("tiny %s model in %s", a.arch, a.out)


# --- VQA ------------------------------------------------------------------------------------


def _pica_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm-spec", required=True, help="JSON config entry of the LLM")
    p.add_argument("--settings", required=True, help="JSON: n_shot, n_ensemble, max_tokens, join")
    p.add_argument("--format", required=True, choices=("okvqa", "aokvqa"))
    for name in (
        "val-questions",
        "train-questions",
        "val-question-features",
        "train-question-features",
        "val-image-features",
        "train-image-features",
        "val-descriptions",
        "train-descriptions",
        "journal",
        "ledger",
    ):
        p.add_argument(f"--{name}", required=True, type=Path)
    p.add_argument("--loops", required=True, type=int, nargs="+")
    p.add_argument("--encoder-spec", help="JSON encoder entry (A-OKVQA multiple choice)")
    p.add_argument("--out", required=True, type=Path, nargs="+", help="one file per loop")


@command("pica", _pica_args)
def _pica(a: argparse.Namespace) -> None:
    """PICa answers for every loop (context = first k descriptions), official formats."""
    import json

    from crossmodal.vqa.pica import PicaSettings
    from crossmodal.vqa.stage import run_pica

    run_pica(
        llm_spec=json.loads(a.llm_spec),
        settings=PicaSettings(**json.loads(a.settings)),
        dataset_format=a.format,
        val_questions=a.val_questions,
        train_questions=a.train_questions,
        val_question_features=a.val_question_features,
        train_question_features=a.train_question_features,
        val_image_features=a.val_image_features,
        train_image_features=a.train_image_features,
        val_descriptions=a.val_descriptions,
        train_descriptions=a.train_descriptions,
        loops=a.loops,
        outputs=a.out,
        journal_path=a.journal,
        ledger_path=a.ledger,
        encoder_spec=json.loads(a.encoder_spec) if a.encoder_spec else None,
    )


def _vqa_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, type=Path)
    p.add_argument("--annotations", required=True, type=Path)
    p.add_argument("--predictions", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


@command("vqa-eval", _vqa_eval_args)
def _vqa_eval(a: argparse.Namespace) -> None:
    """Official VQA accuracy (GT-Vision-Lab vqaEval.py, quirks included)."""
    from crossmodal.io import write_json
    from crossmodal.vqa.vqa_eval import evaluate_files

    result = evaluate_files(a.questions, a.annotations, a.predictions)
    write_json(a.out, result)
    log.info("overall accuracy %.4f on %d questions", result["overall"], result["n_questions"])


def _aokvqa_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, type=Path, help="aokvqa_v1p0_SPLIT.json")
    p.add_argument("--predictions", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


@command("aokvqa-eval", _aokvqa_eval_args)
def _aokvqa_eval(a: argparse.Namespace) -> None:
    """A-OKVQA direct-answer and multiple-choice accuracy (allenai/aokvqa rules)."""
    from crossmodal.io import write_json
    from crossmodal.vqa.aokvqa_eval import evaluate_files

    result = evaluate_files(a.dataset, a.predictions)
    write_json(a.out, result)
    log.info("DA %.2f MC %.2f", result["direct_answer"], result["multiple_choice"])


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs",
        required=True,
        help="JSON list: dataset, vlm, method, loop, llm, score, config_hash",
    )
    p.add_argument("--title", required=True)
    p.add_argument("--out-json", required=True, type=Path)
    p.add_argument("--out-png", required=True, type=Path)


@command("summarize", _summary_args)
def _summarize(a: argparse.Namespace) -> None:
    """Collect every run's score into acc.json and plot accuracy against loop in acc.png."""
    import json

    from crossmodal.summary import summarize

    runs = json.loads(Path(a.runs).read_text()) if a.runs.endswith(".json") else json.loads(a.runs)
    summarize(runs, a.out_json, a.out_png, a.title)


# --- recipes --------------------------------------------------------------------------------


def _workflow_root(directory: Path) -> Path:
    """The checkout holding the Snakefile: the working directory's, else this package's."""
    if (directory / "Snakefile").is_file():
        return directory.resolve()
    return Path(__file__).resolve().parents[2]


def _recipe_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("export", help="record what replays TARGET exactly")
    ex.add_argument("target", help="e.g. results/okvqa/acc.json")
    ex.add_argument("-o", "--out", required=True, type=Path)
    ex.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    ex.add_argument("--directory", type=Path, default=Path("."))
    ve = sub.add_parser("verify", help="recompute output hashes after a replay")
    ve.add_argument("recipe", type=Path)
    ve.add_argument("--directory", type=Path, default=Path("."))
    co = sub.add_parser("config", help="write the recipe's resolved config as YAML")
    co.add_argument("recipe", type=Path)
    co.add_argument("-o", "--out", required=True, type=Path)


@command("recipe", _recipe_args)
def _recipe(a: argparse.Namespace) -> None:
    """Export, verify or replay-configure an exact reproduction recipe."""
    from crossmodal import recipe

    if a.action == "export":
        root = _workflow_root(a.directory)
        r = recipe.export(
            a.target,
            a.configfile.resolve(),
            a.out,
            snakefile=root / "Snakefile",
            workdir=a.directory.resolve(),
            schema=root / "workflow" / "schemas" / "config.schema.yaml",
        )
        log.info("recipe for %s: %d outputs -> %s", a.target, len(r["outputs"]), a.out)
    elif a.action == "config":
        recipe.write_config(a.recipe, a.out)
    else:
        rows, ok = recipe.verify(a.recipe, a.directory.resolve())
        for r in rows:
            note = "" if r["expected_to_match"] else f"  (not reproducible: {r['why_not']})"
            print(f"{r['status']:9s} {r['file']}{note}")
        counts = {s: sum(r["status"] == s for r in rows) for s in ("equal", "different", "missing")}
        print(
            f"{counts['equal']} equal, {counts['different']} different, {counts['missing']} missing"
        )
        if not ok:
            raise CrossmodalError("replay differs from the recipe (see the list above)")


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (configure, func) in COMMANDS.items():
        p = sub.add_parser(name, help=(func.__doc__ or "").strip())
        configure(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except CrossmodalError as exc:
        print(f"crossmodal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
