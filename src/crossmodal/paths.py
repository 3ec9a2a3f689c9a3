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
