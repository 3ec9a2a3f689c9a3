"""Which image collections and question sets exist, and where their files live.

Paths are relative to the resources root. The Snakefile reads this registry to wire download,
extract and prepare rules, so adding a data set is one entry here and nothing in the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crossmodal.errors import CrossmodalError
from crossmodal.paths import RESOURCES


@dataclass(frozen=True)
class Collection:
    """A folder of images, optionally with COCO caption annotations."""

    root: str  # resources-relative folder that archives extract into
    images: str  # image folder inside root
    captions: str | None  # COCO captions JSON inside root (also lists every image)
    archives: tuple[str, ...] = ()  # manifest names that provide it; empty = generated
    mirror_key: str = "coco"


@dataclass(frozen=True)
class Split:
    collection: str
    questions: str  # file inside the dataset root
    annotations: str | None = None  # OK-VQA format keeps answers in a second file


@dataclass(frozen=True)
class Dataset:
    format: str  # "okvqa" or "aokvqa"
    root: str
    splits: dict[str, Split] = field(default_factory=dict)
    archives: tuple[str, ...] = ()
    mirror_key: str = ""


@dataclass(frozen=True)
class DownloadOwner:
    """Files downloaded as one group that is neither a collection nor a data set (reference
    files, JSON shards): what the workflow needs to wire their download, extraction and mirror."""

    archives: tuple[str, ...]
    root: str  # resources-relative folder they extract (or land) into
    mirror_key: str  # the data.mirrors key that can replace their URLs


COLLECTIONS: dict[str, Collection] = {
    "coco_train2014": Collection(
        "coco",
        "train2014",
        "annotations/captions_train2014.json",
        ("train2014.zip", "annotations_trainval2014.zip"),
    ),
    "coco_val2014": Collection(
        "coco",
        "val2014",
        "annotations/captions_val2014.json",
        ("val2014.zip", "annotations_trainval2014.zip"),
    ),
    "coco_train2017": Collection(
        "coco",
        "train2017",
        "annotations/captions_train2017.json",
        ("train2017.zip", "annotations_trainval2017.zip"),
    ),
    "coco_val2017": Collection(
        "coco",
        "val2017",
        "annotations/captions_val2017.json",
        ("val2017.zip", "annotations_trainval2017.zip"),
    ),
    "demo_train2014": Collection(
        "demo/coco", "train2014", "annotations/captions_train2014.json", mirror_key=""
    ),
    "demo_val2014": Collection(
        "demo/coco", "val2014", "annotations/captions_val2014.json", mirror_key=""
    ),
}

_OKVQA_ARCHIVES = (
    "OpenEnded_mscoco_train2014_questions.json.zip",
    "OpenEnded_mscoco_val2014_questions.json.zip",
    "mscoco_train2014_annotations.json.zip",
    "mscoco_val2014_annotations.json.zip",
)


def _okvqa_splits(prefix: str) -> dict[str, Split]:
    return {
        s: Split(
            f"{prefix}_{s}2014",
            f"OpenEnded_mscoco_{s}2014_questions.json",
            f"mscoco_{s}2014_annotations.json",
        )
        for s in ("train", "val")
    }


DATASETS: dict[str, Dataset] = {
    "okvqa": Dataset("okvqa", "okvqa", _okvqa_splits("coco"), _OKVQA_ARCHIVES, "okvqa"),
    "aokvqa": Dataset(
        "aokvqa",
        "aokvqa",
        {
            "train": Split("coco_train2017", "aokvqa_v1p0_train.json"),
            "val": Split("coco_val2017", "aokvqa_v1p0_val.json"),
        },
        ("aokvqa_v1p0.tar.gz",),
        "aokvqa",
    ),
    "demo": Dataset("okvqa", "demo/okvqa", _okvqa_splits("demo")),
}


@dataclass(frozen=True)
class ItrDataset:
    """An image-text retrieval data set: Karpathy split files in ALBEF's JSON layout + images.

    The split files (ALBEF's ``data.tar.gz``; the demo world writes its own) list train entries
    one per caption ``{"caption", "image", "image_id"}`` and val/test entries one per image
    ``{"image", "caption": [...]}``; ``image`` is a path relative to the image folder. The images
    come either from resources (``images``, put in place by ``image_collections``' archives or
    the demo world) or, where no public download exists, from the user's folder named by
    ``data.mirrors[image_mirror]``. ``root``, ``archives`` and ``mirror_key`` describe the
    archive of split files the way a ``Collection`` describes its archives.
    """

    root: str  # resources-relative folder the split files' archive extracts into
    splits: dict[str, str]  # train / val / test -> split file inside root
    images: str | None  # resources-relative folder the split files' image paths start from
    image_mirror: str = ""  # with images=None: data.mirrors key of the user's image folder
    example_image: str = ""  # an image path as the split files give it (for messages)
    image_collections: tuple[str, ...] = ()  # collections whose archives hold the images
    archives: tuple[str, ...] = ()  # manifest names that provide the split files; empty = demo
    mirror_key: str = ""  # data.mirrors key that can replace the archives' URL


ITR_SPLITS = ("train", "val", "test")
_ALBEF_ARCHIVES = ("data.tar.gz",)


def _albef_splits(prefix: str) -> dict[str, str]:
    """ALBEF's split files of one data set, as they lie in its extracted ``data.tar.gz``."""
    return {s: f"data/{prefix}_{s}.json" for s in ITR_SPLITS}


ITR_DATASETS: dict[str, ItrDataset] = {
    "coco_karpathy": ItrDataset(
        "albef",
        _albef_splits("coco"),
        images="coco",  # ALBEF names COCO images train2014/NAME.jpg and val2014/NAME.jpg
        image_collections=("coco_train2014", "coco_val2014"),
        archives=_ALBEF_ARCHIVES,
        mirror_key="albef",
    ),
    "flickr30k": ItrDataset(
        "albef",
        _albef_splits("flickr30k"),
        images=None,  # Flickr30k images are handed out behind a form: the user's folder
        image_mirror="flickr30k",
        example_image="flickr30k-images/1000092795.jpg",
        archives=_ALBEF_ARCHIVES,
        mirror_key="albef",
    ),
    "demo": ItrDataset(
        "demo/itr",
        {s: f"{s}.json" for s in ITR_SPLITS},
        images="demo/coco",
    ),
}


def collection(name: str) -> Collection:
    """Look up a collection, with an error that lists the known ones."""
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise KeyError(f"unknown image collection {name!r}; known: {sorted(COLLECTIONS)}") from None


def dataset(name: str) -> Dataset:
    """Look up a dataset, with an error that lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def itr_dataset(name: str) -> ItrDataset:
    """Look up an image-text retrieval data set, with an error that lists the known ones."""
    try:
        return ITR_DATASETS[name]
    except KeyError:
        raise KeyError(
            f"unknown image-text retrieval data set {name!r}; known: {sorted(ITR_DATASETS)}"
        ) from None


def itr_archives(name: str) -> tuple[str, ...]:
    """Every archive whose extraction puts an ITR data set's files in place: its split files'
    archives, then its image collections' archives (in order, each once). Empty for the demo."""
    ds = itr_dataset(name)
    names = [*ds.archives, *(a for c in ds.image_collections for a in collection(c).archives)]
    return tuple(dict.fromkeys(names))


def itr_files(name: str, mirrors: Mapping[str, str | None]) -> dict[str, str]:
    """The ``prepare-itr`` settings of a data set: its three split files and its image folder,
    as paths the pipeline opens (under ``resources``, or the user's folder for mirrored images).

    ``mirrors`` is the config's ``data.mirrors``. A data set whose images only the user can
    provide raises an error naming the key to set when that key is empty.
    """
    ds = itr_dataset(name)
    files = {f"{s}_json": f"{RESOURCES}/{ds.root}/{ds.splits[s]}" for s in ITR_SPLITS}
    if ds.images is not None:
        return {**files, "image_root": f"{RESOURCES}/{ds.images}"}
    folder = mirrors.get(ds.image_mirror)
    if not folder:
        raise CrossmodalError(
            f"image-text retrieval data set {name!r}: its images have no public download; set "
            f"data.mirrors.{ds.image_mirror} to the folder the split files' image paths start "
            f"from (the folder that holds {ds.example_image})"
        )
    return {**files, "image_root": str(folder)}


# --- compositional image retrieval ------------------------------------------------------------


@dataclass(frozen=True)
class CirDataset:
    """A compositional image retrieval data set in the Rayan challenge's layout.

    Each split is a CSV with the columns ``query_image, query_text, target_image`` (image file
    names) and a folder holding those images, both inside ``root``: a resources-relative folder
    (the demo world writes one) or, for the challenge's data (handed out to participants, no
    public download), the user's folder named by ``data.mirrors[mirror]``.
    """

    splits: dict[str, tuple[str, str]]  # split -> (CSV, image folder), inside the root
    root: str | None  # resources-relative root; None = the user's folder
    mirror: str = ""  # with root=None: the data.mirrors key of the user's folder
    train_split: str = "train"  # the projection trains on it (90/10 train / validation)
    eval_split: str = "test"  # the summary's numbers


@dataclass(frozen=True)
class CirTaggerLists:
    """The tagger's prompt templates and object names as the reference ships them: plain files
    (not archives) downloaded by name from the manifest, pinned by their sha256 there."""

    templates: str = "cir_prompt_templates.json"  # the manifest's names (the reference's,
    objects: str = "cir_objects.txt"  # prefixed: other references ship files of those names)
    root: str = "downloads"  # never extracted: the download rule puts them in place
    mirror_key: str = "cir_lists"

    @property
    def archives(self) -> tuple[str, ...]:
        return (self.templates, self.objects)


CIR_TAGGER_LISTS = CirTaggerLists()
CIR_DEMO_LISTS = ("demo/cir/prompt_templates.json", "demo/cir/objects.txt")

CIR_DATASETS: dict[str, CirDataset] = {
    "rayan": CirDataset(
        {
            "train": ("dataset/data.csv", "dataset/images"),
            "test": ("sample_evaluation/data.csv", "sample_evaluation/images"),
        },
        root=None,
        mirror="cir",
    ),
    "demo": CirDataset(
        {
            "train": ("train/data.csv", "train/images"),
            "test": ("test/data.csv", "test/images"),
        },
        root="demo/cir",
    ),
}


def cir_dataset(name: str) -> CirDataset:
    """Look up a compositional retrieval data set, with an error that lists the known ones."""
    try:
        return CIR_DATASETS[name]
    except KeyError:
        raise CrossmodalError(
            f"unknown compositional retrieval data set {name!r}; known: {sorted(CIR_DATASETS)} "
            "(cir.datasets)"
        ) from None


def cir_files(name: str, split: str, mirrors: Mapping[str, str | None]) -> dict[str, str]:
    """The ``prepare-cir`` settings of one split: its CSV and image folder, as paths the pipeline
    opens. A data set only the user can provide raises an error naming the key to set."""
    ds = cir_dataset(name)
    if split not in ds.splits:
        raise CrossmodalError(
            f"compositional retrieval data set {name!r} has no split {split!r}; "
            f"it has {sorted(ds.splits)}"
        )
    csv, images = ds.splits[split]
    if ds.root is not None:
        root = f"{RESOURCES}/{ds.root}"
    else:
        root = mirrors.get(ds.mirror)
        if not root:
            raise CrossmodalError(
                f"compositional retrieval data set {name!r}: the challenge's files have no "
                f"public download; set data.mirrors.{ds.mirror} to the folder that holds "
                f"{csv} and {images}/"
            )
    return {"csv": f"{root}/{csv}", "image_dir": f"{root}/{images}"}
