"""Every file the pipeline reads or writes, as one path scheme.

Patterns use Snakemake wildcards (``{dataset}``); rules use them as they are, and code fills
them with :func:`fill`. Config names, never model strings, appear in paths, so two settings of
one model never collide. Nothing else in the package or the rules spells a results path.
"""

from __future__ import annotations

RESOURCES = "resources"
RESULTS = "results"

# --- inputs and downloads ---------------------------------------------------------------------
MANIFEST = f"{RESOURCES}/manifests/downloads.json"
DOWNLOAD = f"{RESOURCES}/downloads/{{archive}}"
EXTRACTED = f"{RESOURCES}/.extracted/{{archive}}.json"
DEMO_DONE = f"{RESOURCES}/demo/.generated.json"
DEMO_ROOT = f"{RESOURCES}/demo"
TINY_MODEL_DIR = f"{RESOURCES}/models/{{name}}"
TINY_MODEL = f"{TINY_MODEL_DIR}/config.json"
TINY_ST = f"{TINY_MODEL_DIR}/modules.json"  # a sentence-transformers folder

# --- prepared tables --------------------------------------------------------------------------
IMAGES = f"{RESULTS}/data/{{collection}}/images.parquet"
CAPTIONS = f"{RESULTS}/data/{{collection}}/captions.parquet"
QUESTIONS = f"{RESULTS}/data/{{dataset}}/{{split}}/questions.parquet"
ITR_PAIRS = f"{RESULTS}/data/itr/{{dataset}}/pairs.parquet"

# --- features and indexes ---------------------------------------------------------------------
IMAGE_FEATURES = f"{RESULTS}/features/{{collection}}/{{encoder}}.parquet"
SKIPS = f"{RESULTS}/features/{{collection}}/{{encoder}}.skips.json"
QUESTION_FEATURES = f"{RESULTS}/features/{{dataset}}/{{split}}/questions.{{encoder}}.parquet"
INDEX = f"{RESULTS}/index/{{collection}}/{{encoder}}.faiss"
INDEX_META = f"{RESULTS}/index/{{collection}}/{{encoder}}.json"

# --- descriptions -----------------------------------------------------------------------------
_DESC = f"{RESULTS}/{{dataset}}/{{split}}/descriptions/{{vlm}}/{{method}}"
DESCRIPTIONS = f"{_DESC}.parquet"
DESCRIPTIONS_LEDGER = f"{_DESC}.ledger.json"
DESCRIPTIONS_EXPORT = f"{_DESC}.seed.json"
SHARD = f"{_DESC}.shards/{{shard}}of{{shards}}.parquet"
SHARD_LEDGER = f"{_DESC}.shards/{{shard}}of{{shards}}.ledger.json"
GALLERY = f"{RESULTS}/{{dataset}}/val/gallery/{{vlm}}/{{method}}.html"
DESCRIBE_JOURNAL = f"{RESULTS}/journal/{{dataset}}/{{split}}/{{vlm}}/{{method}}"

# --- PICa, scores, summaries ------------------------------------------------------------------
ANSWERS = f"{RESULTS}/{{dataset}}/val/answers/{{vlm}}/{{method}}/loop{{k}}/{{llm}}.json"
PICA_LEDGER = f"{RESULTS}/{{dataset}}/val/answers/{{vlm}}/{{method}}/{{llm}}.ledger.json"
COVERAGE = f"{RESULTS}/{{dataset}}/val/answers/{{vlm}}/{{method}}/{{llm}}.coverage.json"
PICA_JOURNAL = f"{RESULTS}/journal/{{dataset}}/val/{{vlm}}/{{method}}/pica_{{llm}}"
SCORES = f"{RESULTS}/{{dataset}}/val/scores/{{vlm}}/{{method}}/loop{{k}}/{{llm}}.json"
SUMMARY_JSON = f"{RESULTS}/{{dataset}}/acc.json"
SUMMARY_PNG = f"{RESULTS}/{{dataset}}/acc.png"

# --- CUSA teacher features (train split; rows: unique images / train pairs) ----------------------
CUSA_TEACHER_IMAGE = f"{RESULTS}/cusa/{{dataset}}/teachers/image.{{teacher}}.npy"
CUSA_TEACHER_IMAGE_META = f"{RESULTS}/cusa/{{dataset}}/teachers/image.{{teacher}}.json"
CUSA_TEACHER_TEXT = f"{RESULTS}/cusa/{{dataset}}/teachers/text.{{teacher}}.npy"
CUSA_TEACHER_TEXT_META = f"{RESULTS}/cusa/{{dataset}}/teachers/text.{{teacher}}.json"


# --- compositional image retrieval ---------------------------------------------------------------
CIR_QUERIES = f"{RESULTS}/data/{{dataset}}/{{split}}/queries.parquet"
CIR_IMAGES = f"{RESULTS}/data/{{dataset}}/{{split}}/images.parquet"  # a split's image folder
CIR_MISSING = f"{RESULTS}/data/{{dataset}}/{{split}}/missing.json"  # images the CSV names, absent
CIR_TINY_TAGGER = f"{TINY_MODEL_DIR}/tokenizer.json"  # a tagger folder (not config.json: no clash)
CIR_TAGGER_DATA = f"{RESULTS}/cir/tagger/sentences.parquet"
CIR_TAGGER = f"{RESULTS}/cir/tagger/{{tagger}}/model/config.json"
CIR_TAGGER_SCORES = f"{RESULTS}/cir/tagger/{{tagger}}/scores.json"
CIR_TAGGER_CHECKPOINT = f"{RESULTS}/checkpoints/cir/tagger/{{tagger}}.pt"
CIR_EDITS = f"{RESULTS}/cir/{{dataset}}/{{split}}/edits/{{parser}}.parquet"
_CIR_PROJ = f"{RESULTS}/cir/{{dataset}}/projection/{{encoder}}"
CIR_PROJECTION = f"{_CIR_PROJ}.pt"
CIR_PROJECTION_LOG = f"{_CIR_PROJ}.log.json"
CIR_PROJECTION_CHECKPOINT = f"{RESULTS}/checkpoints/cir/{{dataset}}/{{encoder}}.pt"
# method: untrained or finetuned
_CIR_RUN = f"{RESULTS}/cir/{{dataset}}/{{split}}/{{method}}/{{encoder}}"
CIR_QUERY_FEATURES = f"{_CIR_RUN}.queries.parquet"
CIR_DATABASE_FEATURES = f"{_CIR_RUN}.database.parquet"
CIR_INDEX = f"{_CIR_RUN}.database.faiss"
CIR_INDEX_META = f"{_CIR_RUN}.database.json"
CIR_METRICS = f"{_CIR_RUN}.metrics.json"
CIR_RANKINGS = f"{_CIR_RUN}.rankings.parquet"
CIR_SUMMARY_JSON = f"{RESULTS}/cir/{{dataset}}/summary.json"
CIR_SUMMARY_PNG = f"{RESULTS}/cir/{{dataset}}/summary.png"


def fill(pattern: str, **wildcards: object) -> str:
    """A pattern with its wildcards filled (every wildcard must be given)."""
    return pattern.format(**wildcards)


# --- zero-shot classification -----------------------------------------------------------------
_CROPS = f"{RESULTS}/features/{{collection}}/crops/{{encoder}}/alpha{{alpha}}_m{{n_crops}}"
CROP_FEATURES = f"{_CROPS}.npy"
CROP_META = f"{_CROPS}.json"
ZEROSHOT_RESULT = f"{RESULTS}/zeroshot/{{dataset}}/{{encoder}}/{{method}}.json"
ZEROSHOT_SUMMARY_JSON = f"{RESULTS}/zeroshot/{{dataset}}/summary.json"
ZEROSHOT_SUMMARY_PNG = f"{RESULTS}/zeroshot/{{dataset}}/summary.png"
# prepared classification data sets (crop features use collection "cls_DATASET")
_CLS = f"{RESULTS}/classification/{{dataset}}"
CLS_IMAGES = f"{_CLS}/images.parquet"
CLS_LABELS = f"{_CLS}/labels.parquet"
CLS_CLASSES = f"{_CLS}/classes.json"
CLS_DESCRIPTOR_CLASSES = f"{_CLS}/descriptor_classes.json"  # names CLIP-D's files are keyed by
CLS_WORDS = f"{_CLS}/words.json"  # Waffle's word list as JSON
CLS_TEMPLATES = f"{_CLS}/clip-e.json"  # CLIP-E's templates
CLS_DESCRIPTORS = f"{_CLS}/clip-d.json"  # CLIP-D's descriptors (also Waffle's source)
CLS_REPORT = f"{_CLS}/report.json"  # counts; listed files that are missing
# class descriptions generated by an LLM (CuPL's format), with their ledger and journal
CLASS_DESCRIPTIONS = f"{RESULTS}/zeroshot/{{dataset}}/descriptions/{{llm}}.json"
CLASS_DESCRIPTIONS_LEDGER = f"{RESULTS}/zeroshot/{{dataset}}/descriptions/{{llm}}.ledger.json"
CLASS_DESCRIPTIONS_JOURNAL = f"{RESULTS}/journal/zeroshot/{{dataset}}/{{llm}}"

# --- image-text retrieval (CUSA): models, similarity matrices, metrics --------------------------
_CUSA = f"{RESULTS}/cusa/{{dataset}}/{{variant}}"
CUSA_MODEL = f"{_CUSA}/model.pt"
CUSA_HISTORY = f"{_CUSA}/train.json"
CUSA_CHECKPOINTS = f"{RESULTS}/checkpoints/cusa/{{dataset}}/{{variant}}"  # not an output
_ITR = f"{RESULTS}/itr/{{dataset}}/{{run}}"
ITR_SCORES = f"{_ITR}/scores.npy"
ITR_IMG_IDS = f"{_ITR}/img_ids.json"
ITR_TXT_IMG = f"{_ITR}/txt_img.json"
ITR_METRICS = f"{_ITR}/metrics.json"
ITR_SUMMARY_JSON = f"{RESULTS}/itr/{{dataset}}/summary.json"
ITR_SUMMARY_PNG = f"{RESULTS}/itr/{{dataset}}/summary.png"

# --- dialogue-to-photo retrieval ----------------------------------------------------------------
DIALOG_DEMO_SHARD = f"{DEMO_ROOT}/photochat/{{split}}/{{split}}_00.json"  # PhotoChat's layout
DIALOG_DEMO_PHOTOS = f"{DEMO_ROOT}/photochat/photos"  # read like data.mirrors.photochat
DIALOG_DEMO_PHOTOS_DONE = f"{DIALOG_DEMO_PHOTOS}/.generated.json"
DIALOG_DIALOGUES = f"{RESULTS}/data/dialog/{{dataset}}/{{split}}/dialogues.parquet"
DIALOG_PHOTOS = f"{RESULTS}/data/dialog/{{dataset}}/photos.parquet"
DIALOG_PHOTO_FOLDER = f"{RESOURCES}/photos/{{dataset}}"  # fetched photos: not an output
_DLG = f"{RESULTS}/dialog/{{dataset}}"
_DLG_DESC = f"{_DLG}/{{split}}/descriptors/{{llm}}"
DIALOG_DESCRIPTORS = f"{_DLG_DESC}.parquet"
DIALOG_DESCRIPTORS_LEDGER = f"{_DLG_DESC}.ledger.json"
DIALOG_JOURNAL = f"{RESULTS}/journal/dialog/{{dataset}}/{{split}}/{{llm}}"
_DLG_MODEL = f"{_DLG}/model/{{llm}}/{{encoder}}"
DIALOG_MODEL = f"{_DLG_MODEL}/model.pt"
DIALOG_HISTORY = f"{_DLG_MODEL}/train.json"
# not an output: survives a failed job
DIALOG_CHECKPOINTS = f"{RESULTS}/checkpoints/dialog/{{dataset}}/{{llm}}/{{encoder}}"
# method: zero_shot or finetuned
_DLG_RUN = f"{_DLG}/{{method}}/{{llm}}/{{encoder}}"
DIALOG_QUERIES = f"{_DLG_RUN}/queries.parquet"
DIALOG_CANDIDATES = f"{_DLG_RUN}/candidates.parquet"
DIALOG_INDEX = f"{_DLG_RUN}/index.faiss"  # its sidecar: index.json beside it
DIALOG_SCORES = f"{_DLG_RUN}/scores.npy"
DIALOG_CANDIDATE_IDS = f"{_DLG_RUN}/candidate_ids.json"
DIALOG_TRUTH = f"{_DLG_RUN}/truth.json"
DIALOG_EXCLUDED = f"{_DLG_RUN}/excluded.json"
DIALOG_PREDICTIONS = f"{_DLG_RUN}/predictions.csv"
DIALOG_METRICS = f"{_DLG_RUN}/metrics.json"
DIALOG_SUMMARY_JSON = f"{_DLG}/summary.json"
DIALOG_SUMMARY_PNG = f"{_DLG}/summary.png"
