"""Image-classification data sets for zero-shot classification: registry, layouts, prepare.

Each data set of the WCA reference (``helper.py:36-119``, ``my_datasets/*.py``) is read in its
official layout and split, the one the reference evaluates:

- ``imagenet``: ImageNet val as an ImageFolder (``val/<wnid>/*.JPEG``, classes = sorted wnids),
  from the user's folder ``data.mirrors.imagenet`` (ImageNet is handed out behind a login);
- ``imagenetv2``: matched-frequency, folders ``0`` .. ``999`` named by class index;
- ``cub``: CUB-200-2011's test images (``train_test_split.txt`` 0), labels from
  ``image_class_labels.txt`` (the reference's ImageFolder order is the same);
- ``oxford_pet``: ``annotations/test.txt`` (class ids, 1-based);
- ``dtd``: ``labels/test1.txt`` (classes = sorted folder names, as the reference's loader);
- ``food101``: ``meta/test.json`` (classes = its sorted keys);
- ``place365``: Places365-standard val at full resolution (``val_large/``, ``small=False``),
  labels from ``places365_val.txt``;
- ``demo``: the demo world's ImageFolder of single shapes.

Class names are the reference's (``features/DATASET/DATASET.json``; ImageNet's two lists in
``utils.py``: ``imagenet_classes`` for CLIP, CLIP-E, CuPL and WCA, ``openai_imagenet_classes``,
which differs in four names, for CLIP-D and Waffle, ``helper.py:153-158``). Prompt files are the
reference's ``prompts/DATASET/*.json``; Waffle's words its ``features/word_list.pkl``.

:func:`prepare_classification` writes images.parquet (the shared layout of
``crossmodal.data.prepare``), labels.parquet (image_id, label), classes.json, the class names
CLIP-D's file is keyed by, Waffle's words as JSON, and a report. An image the split lists but
the disk lacks (or whose header cannot be read) is left out *and listed* in the report with the
count; more than ``max_missing_fraction`` of them is an error naming them.
"""

from __future__ import annotations

import ast
import io
import logging
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from crossmodal.data.prepare import IMAGES_SCHEMA
from crossmodal.data.registry import DownloadOwner
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import read_json, write_json, write_table

log = logging.getLogger(__name__)

# The reference's commit that every resource URL pins.
REFERENCE = (
    "https://raw.githubusercontent.com/JinhaoLee/WCA/dfb4e6ff601de96b200e918fe9c24815f408d972"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABELS_SCHEMA = pa.schema([("image_id", pa.int64()), ("label", pa.int64())])
PROMPT_KINDS = ("clip-e", "clip-d", "cupl")  # the reference's prompt files per data set
WORD_LIST = "wca_word_list.pkl"
UTILS = "wca_utils.py"


@dataclass(frozen=True)
class ClsDataset:
    """One classification data set: where its images come from and which files describe it.

    ``archives`` are manifest names extracted into ``resources/root`` (empty: the demo, or
    images from the user's ``data.mirrors[image_mirror]`` folder). ``images`` is the folder the
    layout starts from, inside ``resources/root`` or the mirror folder. ``resources`` are
    manifest names of single files used as they are (class names, prompt files): they are
    downloaded, never extracted.
    """

    layout: str
    root: str
    images: str
    class_names: str  # manifest name (or, for the demo, a resources-relative file)
    prompts: dict[str, str] = field(default_factory=dict)  # clip-e / clip-d / cupl -> file
    class_names_key: str | None = None
    descriptor_names_key: str | None = None
    archives: tuple[str, ...] = ()
    mirror_key: str = ""
    image_mirror: str = ""
    example_image: str = ""
    word_source: str = WORD_LIST
    demo: bool = False


def _prompts(name: str) -> dict[str, str]:
    return {kind: f"wca_{name}_{kind}.json" for kind in PROMPT_KINDS}


_DEMO = "demo/cls"
CLS_DATASETS: dict[str, ClsDataset] = {
    "imagenet": ClsDataset(
        "imagefolder",
        "",
        "val",
        UTILS,
        _prompts("imagenet"),
        class_names_key="imagenet_classes",
        descriptor_names_key="openai_imagenet_classes",
        image_mirror="imagenet",
        example_image="val/n01440764/ILSVRC2012_val_00000293.JPEG",
    ),
    "imagenetv2": ClsDataset(
        "imagenetv2",
        "imagenetv2",
        "imagenetv2-matched-frequency-format-val",
        UTILS,
        _prompts("imagenet"),  # the reference's prompts/imagenetv2 files equal ImageNet's
        class_names_key="imagenet_classes",
        descriptor_names_key="openai_imagenet_classes",
        archives=("imagenetv2-matched-frequency.tar.gz",),
        mirror_key="imagenetv2",
    ),
    "cub": ClsDataset(
        "cub",
        "cub",
        "CUB_200_2011",
        "wca_cub_classes.json",
        _prompts("cub"),
        archives=("CUB_200_2011.tgz",),
        mirror_key="cub",
    ),
    "oxford_pet": ClsDataset(
        "oxford_pet",
        "oxford_pet",
        ".",
        "wca_oxford_pet_classes.json",
        _prompts("oxford_pet"),
        archives=("images.tar.gz", "annotations.tar.gz"),
        mirror_key="oxford_pet",
    ),
    "dtd": ClsDataset(
        "dtd",
        "dtd",
        "dtd",
        "wca_dtd_classes.json",
        _prompts("dtd"),
        archives=("dtd-r1.0.1.tar.gz",),
        mirror_key="dtd",
    ),
    "food101": ClsDataset(
        "food101",
        "food101",
        "food-101",
        "wca_food101_classes.json",
        _prompts("food101"),
        archives=("food-101.tar.gz",),
        mirror_key="food101",
    ),
    "place365": ClsDataset(
        "place365",
        "place365",
        ".",
        "wca_place365_classes.json",
        _prompts("place365"),
        archives=("filelist_places365-standard.tar", "val_large.tar"),
        mirror_key="place365",
    ),
    "demo": ClsDataset(
        "imagefolder",
        _DEMO,
        "images",
        f"{_DEMO}/classes.json",
        {"clip-e": f"{_DEMO}/clip-e.json", "clip-d": f"{_DEMO}/clip-d.json"},
        word_source=f"{_DEMO}/words.json",
        demo=True,
    ),
}


def resource_files() -> tuple[str, ...]:
    """Manifest names of every single-file resource (class names, prompts, word list)."""
    names = [UTILS, WORD_LIST]
    for ds in CLS_DATASETS.values():
        if not ds.demo:
            names += [ds.class_names, *ds.prompts.values()]
    return tuple(dict.fromkeys(names))


def download_owners() -> list[Any]:
    """Every downloadable file of zero-shot classification: the image archives (by data set)
    and the reference's files (mirror key ``wca``, never extracted)."""
    owners: list[Any] = [ds for ds in CLS_DATASETS.values() if ds.archives]
    owners.append(DownloadOwner(resource_files(), "wca", "wca"))
    return owners


def cls_dataset(name: str) -> ClsDataset:
    """Look up a classification data set, with an error that lists the known ones."""
    try:
        return CLS_DATASETS[name]
    except KeyError:
        raise CrossmodalError(
            f"unknown classification data set {name!r} (wca.datasets); known: "
            f"{sorted(CLS_DATASETS)}"
        ) from None


def image_root(name: str, mirrors: dict[str, str | None], resources: str = "resources") -> str:
    """The folder a data set's layout starts from: under resources, or the user's mirror."""
    ds = cls_dataset(name)
    if not ds.image_mirror:
        return f"{resources}/{ds.root}/{ds.images}".replace("/./", "/").rstrip("/.")
    folder = mirrors.get(ds.image_mirror)
    if not folder:
        raise CrossmodalError(
            f"classification data set {name!r}: its images have no public download; set "
            f"data.mirrors.{ds.image_mirror} to the folder that holds {ds.example_image}"
        )
    return f"{folder}/{ds.images}"


# --- layouts: each returns (relative image paths, labels, number of classes) -----------------

Listing = tuple[list[str], list[int], int]


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError(f"{path}: missing; the data set's split file must be in place")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _imagefolder(root: Path) -> Listing:
    if not root.is_dir():
        raise DataFormatError(f"{root}: no such folder (an ImageFolder: one folder per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p.name for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths += [f"{name}/{f}" for f in files]
        labels += [label] * len(files)
    return paths, labels, len(classes)


def _imagenetv2(root: Path) -> Listing:
    if not root.is_dir():
        raise DataFormatError(f"{root}: no such folder (ImageNetV2: folders 0 .. 999)")
    folders = [p for p in root.iterdir() if p.is_dir()]
    bad = [p.name for p in folders if not p.name.isdigit()]
    if bad:
        raise DataFormatError(f"{root}: folders must be class indices, found {bad[:5]}")
    paths, labels = [], []
    for folder in sorted(folders, key=lambda p: int(p.name)):
        files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [f"{folder.name}/{f}" for f in files]
        labels += [int(folder.name)] * len(files)
    return paths, labels, 1000


def _cub(root: Path) -> Listing:
    names = dict(line.split(" ", 1) for line in _lines(root / "images.txt"))
    is_train = dict(line.split(" ", 1) for line in _lines(root / "train_test_split.txt"))
    label = dict(line.split(" ", 1) for line in _lines(root / "image_class_labels.txt"))
    test = [i for i in names if is_train.get(i) == "0"]
    return [f"images/{names[i]}" for i in test], [int(label[i]) - 1 for i in test], 200


def _oxford_pet(root: Path) -> Listing:
    rows = [line.split() for line in _lines(root / "annotations" / "test.txt")]
    return [f"images/{r[0]}.jpg" for r in rows], [int(r[1]) - 1 for r in rows], 37


def _dtd(root: Path) -> Listing:
    rows = _lines(root / "labels" / "test1.txt")
    classes = sorted({r.split("/")[0] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    return [f"images/{r}" for r in rows], [index[r.split("/")[0]] for r in rows], len(classes)


def _food101(root: Path) -> Listing:
    meta = read_json(root / "meta" / "test.json")
    if not isinstance(meta, dict):
        raise DataFormatError(f"{root}/meta/test.json: expected {{class: [image paths]}}")
    paths, labels = [], []
    for label, name in enumerate(sorted(meta)):
        paths += [f"images/{rel}.jpg" for rel in meta[name]]
        labels += [label] * len(meta[name])
    return paths, labels, len(meta)


def _place365(root: Path) -> Listing:
    rows = [line.split() for line in _lines(root / "places365_val.txt")]
    return [f"val_large/{r[0]}" for r in rows], [int(r[1]) for r in rows], 365


LAYOUTS: dict[str, Callable[[Path], Listing]] = {
    "imagefolder": _imagefolder,
    "imagenetv2": _imagenetv2,
    "cub": _cub,
    "oxford_pet": _oxford_pet,
    "dtd": _dtd,
    "food101": _food101,
    "place365": _place365,
}


# --- class names and word lists --------------------------------------------------------------


def read_name_list(path: str | Path, key: str | None) -> list[str]:
    """A list of strings: a JSON list, or (``key`` given) a list literal assigned to ``key``
    in a Python file, read with :func:`ast.literal_eval` (never executed)."""
    path = Path(path)
    if key is None:
        names = read_json(path)
    else:
        tree = ast.parse(path.read_text(), filename=str(path))
        values = [
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == key for t in node.targets)
        ]
        if len(values) != 1:
            raise DataFormatError(
                f"{path}: expected one assignment to {key!r}, found {len(values)}"
            )
        names = ast.literal_eval(values[0])
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataFormatError(f"{path}: expected a non-empty list of class names ({key or 'JSON'})")
    return names


class _WordUnpickler(pickle.Unpickler):
    """Loads the reference's word_list.pkl (a list of NumPy strings) and nothing else: any
    other global is refused, so a tampered pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataFormatError(
                f"word list pickle refers to {module}.{name}; only a list of strings is accepted"
            )
        return super().find_class(module, name)


def read_words(path: str | Path) -> list[str]:
    """Waffle's word list: the reference's ``word_list.pkl`` or a JSON list of strings."""
    path = Path(path)
    if path.suffix == ".pkl":
        words = _WordUnpickler(io.BytesIO(path.read_bytes())).load()
    else:
        words = read_json(path)
    if not isinstance(words, list) or not words:
        raise DataFormatError(f"{path}: expected a non-empty list of words")
    return [str(w) for w in words]


# --- prepare ---------------------------------------------------------------------------------


class TooManyMissingImagesError(CrossmodalError):
    """More listed images are missing than ``max_missing_fraction`` allows."""


def _size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the header, or why it cannot be read."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable header ({type(exc).__name__})"


def prepare_classification(
    *,
    layout: str,
    root: str | Path,
    class_names: list[str],
    descriptor_names: list[str],
    words: list[str],
    templates: list[str],
    descriptors: dict[str, list[str]],
    out: dict[str, Path],
    max_missing_fraction: float,
) -> dict[str, Any]:
    """List a data set's evaluation images with labels; write the tables; return the report.

    ``out`` holds the paths ``images``, ``labels``, ``classes``, ``descriptor_classes``,
    ``words``, ``templates``, ``descriptors``, ``report``. Image ids are the listing order
    (0, 1, ...): the official split file's order (sorted folders for ImageFolder layouts).
    """
    if layout not in LAYOUTS:
        raise CrossmodalError(f"unknown layout {layout!r}; one of {sorted(LAYOUTS)}")
    root = Path(root)
    rel, labels, n_classes = LAYOUTS[layout](root)
    if not rel:
        raise DataFormatError(f"{root}: the {layout} layout lists no image")
    for what, names in (("class names", class_names), ("descriptor class names", descriptor_names)):
        if len(names) != n_classes:
            raise DataFormatError(
                f"{root}: {n_classes} classes in the {layout} layout but {len(names)} {what}; "
                "the class-name file belongs to another data set (or a class folder is missing)"
            )
    bad_labels = sorted({lab for lab in labels if not 0 <= lab < n_classes})
    if bad_labels:
        raise DataFormatError(f"{root}: labels {bad_labels[:5]} outside 0..{n_classes - 1}")
    kept: dict[str, list] = {"image_id": [], "path": [], "width": [], "height": [], "label": []}
    left_out: list[dict[str, Any]] = []
    for image_id, (r, lab) in enumerate(zip(rel, labels, strict=True)):
        path = root / r
        size = _size(path)
        if isinstance(size, str):
            left_out.append({"image_id": image_id, "path": str(path), "reason": size})
            continue
        for k, v in (("image_id", image_id), ("path", str(path)), ("label", lab)):
            kept[k].append(v)
        kept["width"].append(size[0])
        kept["height"].append(size[1])
    allowed = int(max_missing_fraction * len(rel))
    if len(left_out) > allowed:
        listed = "\n  ".join(f"{m['path']}: {m['reason']}" for m in left_out[:20])
        more = f"\n  ... and {len(left_out) - 20} more" if len(left_out) > 20 else ""
        raise TooManyMissingImagesError(
            f"{len(left_out)} of {len(rel)} images the {layout} split lists under {root} are "
            f"missing or unreadable (ceiling {allowed}, max_missing_fraction="
            f"{max_missing_fraction}); put them in place (re-extract the archive) or allow "
            f"more:\n  {listed}{more}"
        )
    source = {"stage": "prepare-classification", "layout": layout, "root": str(root)}
    images = pa.table({k: kept[k] for k in IMAGES_SCHEMA.names}, schema=IMAGES_SCHEMA)
    label_table = pa.table(
        {"image_id": kept["image_id"], "label": kept["label"]}, schema=LABELS_SCHEMA
    )
    write_table(out["images"], images, source)
    write_table(out["labels"], label_table, source)
    write_json(out["classes"], class_names)
    write_json(out["descriptor_classes"], descriptor_names)
    write_json(out["words"], words)
    write_json(out["templates"], templates)
    write_json(out["descriptors"], descriptors)
    per_class = Counter(kept["label"])
    report = {
        **source,
        "listed": len(rel),
        "kept": len(kept["image_id"]),
        "left_out_count": len(left_out),
        "left_out_by_reason": dict(Counter(m["reason"] for m in left_out)),
        "left_out": left_out,
        "n_classes": n_classes,
        "images_per_class": {class_names[c]: per_class.get(c, 0) for c in range(n_classes)},
        "classes_without_images": [class_names[c] for c in range(n_classes) if c not in per_class],
    }
    write_json(out["report"], report)
    log.info(
        "%s: %d of %d listed images kept, %d left out (listed in %s)",
        root,
        report["kept"],
        report["listed"],
        len(left_out),
        out["report"],
    )
    return report


def run_prepare_classification(job) -> dict[str, Any]:
    """The ``prepare-classification`` stage (a :class:`crossmodal.stages.PrepareClassification`
    job)."""
    names = read_name_list(job.class_names, job.class_names_key)
    descriptor = (
        read_name_list(job.class_names, job.descriptor_names_key)
        if job.descriptor_names_key
        else names
    )
    outputs = ("images", "labels", "classes", "descriptor_classes", "words", "templates")
    return prepare_classification(
        layout=job.layout,
        root=job.image_root,
        class_names=names,
        descriptor_names=descriptor,
        words=read_words(job.word_source),
        templates=read_templates(job.templates_source),
        descriptors=read_descriptors(job.descriptors_source),
        out={k: getattr(job, k) for k in (*outputs, "descriptors", "report")},
        max_missing_fraction=job.max_missing_fraction,
    )


def read_templates(path: str | Path) -> list[str]:
    """CLIP-E's templates: a non-empty JSON list of strings, each with one ``{}``."""
    templates = read_json(path)
    if (
        not isinstance(templates, list)
        or not templates
        or not all(isinstance(t, str) and "{}" in t for t in templates)
    ):
        raise DataFormatError(f"{path}: expected a JSON list of templates, each with '{{}}'")
    return templates


def read_descriptors(path: str | Path) -> dict[str, list[str]]:
    """CLIP-D's descriptors: a JSON object {class name: [descriptors]}."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in data.values()
    ):
        raise DataFormatError(f"{path}: expected a JSON object {{class name: [descriptors]}}")
    return data
