"""Every stage of the pipeline as a typed job: its inputs, outputs and settings, declared once.

The ``crossmodal`` command line is generated from these classes (one subcommand each), the
Snakemake rules fill them by field name (``crossmodal.workflow``), and the stage code receives
the job object. ``impl`` names the function that runs a job; it is imported only then, so this
module stays light. Settings have no defaults here: they come from the config schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.jobs import Job, job, reads, setting, writes

# --- data -------------------------------------------------------------------------------------


@job("download", "crossmodal.data.run:run_download")
class Download(Job):
    """Download one manifest file: resume, verify, pin the checksum of an unpublished one."""

    manifest: Path = setting("the download manifest (JSON)")
    name: str = setting("file name as listed in the manifest, e.g. val2014.zip")
    file: Path = writes("where the verified file lands")
    retries: int = setting("retries of a cut or timed-out transfer")
    timeout: float = setting("seconds without data before an attempt fails")
    mirror: str | None = setting("base URL or local folder replacing the URL", optional=True)


@job("extract", "crossmodal.data.run:run_extract")
class Extract(Job):
    """Extract an archive safely (no entry outside the target, nothing half-done)."""

    archive: Path = reads("the verified archive")
    manifest: Path = setting("the download manifest (its max_extracted_bytes caps extraction)")
    into: Path = setting("folder to extract into")
    done: Path = writes("marker written after a complete extraction")


@job("make-demo", "crossmodal.data.run:run_make_demo")
class MakeDemo(Job):
    """Generate the seeded demo world in COCO / OK-VQA layout."""

    root: Path = setting("folder of the demo world")
    seed: int = setting("seed of the world")
    n_train: int = setting("training images")
    n_val: int = setting("validation images")
    image_size: list[int] = setting("width height in pixels")
    done: Path = writes("marker listing what was generated")


@job("prepare-collection", "crossmodal.data.run:run_prepare_collection")
class PrepareCollection(Job):
    """COCO captions JSON + image folder -> images.parquet, captions.parquet."""

    sources: list[Path] = reads("markers proving the files are in place (extraction, demo)")
    image_dir: Path = setting("folder of the images")
    captions_json: Path = setting("COCO captions JSON (lists every image)")
    images: Path = writes("image_id, path, width, height")
    captions: Path = writes("image_id, caption")


@job("prepare-questions", "crossmodal.data.run:run_prepare_questions")
class PrepareQuestions(Job):
    """OK-VQA or A-OKVQA files -> questions.parquet (validated: ids, answers, duplicates)."""

    sources: list[Path] = reads("markers proving the files are in place (extraction, demo)")
    format: str = setting("okvqa or aokvqa")
    questions_json: Path = setting("official questions file")
    annotations_json: Path | None = setting("OK-VQA annotations file", optional=True)
    questions: Path = writes("questions.parquet")


@job("prepare-itr", "crossmodal.cusa.data:run_prepare_itr")
class PrepareItr(Job):
    """Karpathy split files (ALBEF layout) + image folder -> pairs.parquet, one row per caption."""

    sources: list[Path] = reads("markers proving the files are in place (extraction, demo)")
    train_json: Path = setting("train split file: one entry per caption")
    val_json: Path = setting("val split file: one entry per image, with its captions")
    test_json: Path = setting("test split file: one entry per image, with its captions")
    image_root: Path = setting("folder the split files' image paths start from")
    max_words: int = setting("captions are cut to this many words (pre_caption)")
    pairs: Path = writes("image_id, path, caption, text, split")


# --- features and indexes ---------------------------------------------------------------------


@job("extract-features", "crossmodal.features:run_extract_features")
class ExtractFeatures(Job):
    """images.parquet -> L2-normalised image features in Parquet, plus the skip report."""

    images: Path = reads("images.parquet of the collection")
    features: Path = writes("image_id, embedding")
    skips: Path = writes("images that could not be read, with reasons; converted colour modes")
    encoder: dict[str, Any] = setting("the encoder's config entry")
    batch_size: int = setting("images per encoder batch")
    workers: int = setting("decode worker processes")
    draft: bool = setting("JPEG draft decoding when the image is downscaled anyway")
    dtype: str = setting("storage type of the embeddings: float32 or float16")
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    max_skip_fraction: float = setting("unreadable images tolerated before the stage fails")
    max_pixels: int = setting("larger images are skipped (decompression bombs)")


@job("extract-text-features", "crossmodal.features:run_extract_text_features")
class ExtractTextFeatures(Job):
    """One text column of a table (questions, captions) -> text features in Parquet."""

    table: Path = reads("Parquet table with the texts")
    features: Path = writes("id, embedding")
    id_column: str = setting("column of the ids")
    text_column: str = setting("column of the texts")
    encoder: dict[str, Any] = setting("the encoder's config entry")
    dtype: str = setting("storage type of the embeddings: float32 or float16")
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")


@job("build-index", "crossmodal.index:run_build_index")
class BuildIndex(Job):
    """Features Parquet -> FAISS index (flat, ivf or hnsw) with ids = image_id."""

    features: Path = reads("image features Parquet")
    index: Path = writes("the FAISS index")
    meta: Path = writes("JSON sidecar: kind, size, parameters, provenance of the features")
    params: dict[str, Any] = setting("the config's index block")


# --- descriptions -----------------------------------------------------------------------------


@job("make-tiny-vlm", "crossmodal.generation.tiny:run_make_tiny_vlm")
class MakeTinyVlm(Job):
    """Build a tiny random-weight VLM folder (tests and the demo; its text is noise)."""

    config: Path = writes("config.json of the model folder")
    arch: str = setting("llava or qwen2_vl")
    seed: int = setting("seed of the random weights")


@job("describe", "crossmodal.recod.stage:run_describe_job")
class Describe(Job):
    """One shard of image descriptions, with or without ReCoD, every request journalled."""

    images: Path = reads("images.parquet of the target collection")
    questions: Path = reads("questions.parquet: the images they ask about are the targets")
    skips: Path = reads("skip report of the target collection's features (unreadable images)")
    table: Path = writes("image_id, loop, text, retrieved_id, score, reference")
    ledger: Path = writes("tokens, cost, requests sent and answered from the journal")
    vlm: dict[str, Any] = setting("the VLM's config entry")
    settings: dict[str, Any] = setting("method, sampling and loop settings")
    journal: Path = setting("journal folder (outside the outputs: survives a crash)")
    chunk: int = setting("requests sent (and journalled) per chunk")
    shard: int = setting("this job's shard, 0-based")
    shards: int = setting("number of shards the targets are split into")
    limit: int | None = setting("describe only the first N targets", optional=True)
    model: Path | None = reads("a locally built model's config.json", optional=True)
    base: Path | None = reads("the base descriptions (ReCoD's loop 0)", optional=True)
    encoder: dict[str, Any] | None = setting("CLIP encoder entry (ReCoD retrieval)", optional=True)
    index: Path | None = reads("FAISS index of the retrieval collection", optional=True)
    retrieval_images: Path | None = reads(
        "images.parquet of the retrieval collection", optional=True
    )
    retrieval_captions: Path | None = reads("captions of the retrieval collection", optional=True)


@job("merge-descriptions", "crossmodal.recod.stage:run_merge_job")
class MergeDescriptions(Job):
    """Join a describe stage's shards into one table, one ledger and the reference layout."""

    tables: list[Path] = reads("the shards' tables, in shard order")
    ledgers: list[Path] = reads("the shards' ledgers, in shard order")
    table: Path = writes("image_id, loop, text, retrieved_id, score, reference")
    ledger: Path = writes("the shards' ledgers added up")
    export: Path = writes("the descriptions in the reference code's JSON layout")


@job("gallery", "crossmodal.recod.gallery:run_gallery")
class Gallery(Job):
    """A page of a few validation images: each ReCoD loop's retrieved image and description."""

    descriptions: Path = reads("descriptions of the validation images (a ReCoD method)")
    images: Path = reads("images.parquet of the validation collection")
    retrieval_images: Path = reads("images.parquet of the retrieval collection")
    page: Path = writes("self-contained HTML page for the report")
    n_images: int = setting("validation images shown")
    title: str = setting("page title")


# --- VQA --------------------------------------------------------------------------------------


@job("pica", "crossmodal.vqa.stage:run_pica")
class Pica(Job):
    """PICa answers for every loop k (context = a question's first k descriptions)."""

    val_questions: Path = reads("validation questions.parquet")
    train_questions: Path = reads("training questions.parquet (in-context examples)")
    val_question_features: Path = reads("CLIP features of the validation questions")
    train_question_features: Path = reads("CLIP features of the training questions")
    val_image_features: Path = reads("CLIP features of the validation images")
    train_image_features: Path = reads("CLIP features of the training images")
    val_descriptions: Path = reads("descriptions of the validation images")
    train_descriptions: Path = reads("descriptions of the training images")
    answers: list[Path] = writes("one official-format answers file per loop, in --loops order")
    ledger: Path = writes("tokens, cost, requests sent and answered from the journal")
    coverage: Path = writes("questions answered, and those left out with the reason")
    llm: dict[str, Any] = setting("the LLM's config entry")
    settings: dict[str, Any] = setting("n_shot, n_ensemble, max_tokens, join")
    format: str = setting("okvqa or aokvqa (output format)")
    loops: list[int] = setting("the k values, one per answers file")
    journal: Path = setting("journal folder (outside the outputs: survives a crash)")
    model: Path | None = reads("a locally built model's config.json", optional=True)
    encoder: dict[str, Any] | None = setting("CLIP encoder (A-OKVQA choices)", optional=True)


@job("score", "crossmodal.vqa.score:run_score")
class Score(Job):
    """Official accuracy of one answers file over the questions PICa covered."""

    answers: Path = reads("official-format answers")
    coverage: Path = reads("questions answered and those left out, with reasons")
    sources: list[Path] = reads("markers proving the official files are in place")
    format: str = setting("okvqa (official VQA evaluator) or aokvqa (A-OKVQA's)")
    questions_json: Path = setting("official questions file (A-OKVQA: the dataset file)")
    annotations_json: Path | None = setting("official annotations file (OK-VQA)", optional=True)
    scores: Path = writes("overall, per type and per question accuracy, and what was left out")


@job("summarize", "crossmodal.summary:run_summarize")
class Summarize(Job):
    """Every configured run's score in one table (acc.json) and one plot (acc.png)."""

    scores: list[Path] = reads("score files, in the order of --runs")
    runs: list[dict[str, Any]] = setting("per score file: dataset, vlm, method, loop, llm, hash")
    title: str = setting("plot title")
    summary: Path = writes("acc.json")
    plot: Path = writes("acc.png")


# --- evaluators over plain files (what others can check the numbers with) ------------------------


@job("vqa-eval", "crossmodal.vqa.score:run_vqa_eval")
class VqaEval(Job):
    """Official VQA accuracy (GT-Vision-Lab's vqaEval.py, quirks included)."""

    questions: Path = reads("official questions JSON")
    annotations: Path = reads("official annotations JSON")
    predictions: Path = reads("[{question_id, answer}] covering exactly the annotated questions")
    out: Path = writes("overall, per question type, per answer type and per question accuracy")


@job("aokvqa-eval", "crossmodal.vqa.score:run_aokvqa_eval")
class AokvqaEval(Job):
    """A-OKVQA direct-answer and multiple-choice accuracy (allenai/aokvqa's rules)."""

    dataset: Path = reads("aokvqa_v1p0_SPLIT.json")
    predictions: Path = reads("{question_id: {direct_answer, multiple_choice}}")
    out: Path = writes("direct-answer and multiple-choice accuracy, per question")


@job("itr-eval", "crossmodal.cusa.itr_eval:run_itr_eval")
class ItrEval(Job):
    """Image-text retrieval R@1/5/10 both ways and rsum of a similarity matrix (itm_eval)."""

    scores: Path = reads("images x texts similarity matrix (.npy)")
    img_ids: Path = reads("JSON list: the image id of each row of the scores")
    txt_img: Path = reads("JSON list: the image id of each text (column of the scores)")
    out: Path = writes("i2t_r1 i2t_r5 i2t_r10 t2i_r1 t2i_r5 t2i_r10 rsum, in percent")


# --- image-text retrieval (CUSA) ----------------------------------------------------------------


@job("cusa-train", "crossmodal.cusa.train:run_cusa_train")
class CusaTrain(Job):
    """Fine-tune CLIP with one CUSA variant under torchrun; keep the selected epoch's model."""

    pairs: Path = reads("pairs.parquet of the retrieval data set")
    image_teacher: Path = reads("image teacher features of the training images (.npy)")
    image_teacher_meta: Path = reads("its sidecar: ids, shape, provenance")
    text_teacher: Path = reads("text teacher features of the training pairs (.npy)")
    text_teacher_meta: Path = reads("its sidecar: shape, provenance")
    model: Path = writes("the selected epoch's student (torch)")
    history: Path = writes("per-epoch losses, temperatures and validation metrics; the selection")
    student: dict[str, Any] = setting("the student's encoder entry (open_clip, tiny or hf)")
    method: str = setting("contrastive, csa, usa or cusa")
    loss: dict[str, Any] = setting("the cusa.loss block (rates, temperatures, all_gather)")
    epochs: int = setting("training epochs")
    batch_size: int = setting("pairs per process and step")
    lr: float = setting("AdamW learning rate at epoch 0")
    min_lr: float = setting("cosine schedule's floor")
    weight_decay: float = setting("AdamW weight decay (not on biases and 1-d tensors)")
    seed: int = setting("seed (each process adds its rank)")
    select: str = setting("split that selects the epoch: val, or test as the reference")
    device: str = setting("auto, cpu or cuda (torchrun sets the GPU of each process)")
    workers: int = setting("image decode workers per process")
    eval_batch_size: int = setting("images or texts per batch when evaluating")
    checkpoints: Path = setting("checkpoint folder (outside the outputs: survives a crash)")
    checkpoint_every: int = setting("also checkpoint every N steps (0: once per epoch)")


@job("itr-scores", "crossmodal.cusa.retrieval:run_itr_scores")
class ItrScores(Job):
    """Images x texts similarities of one split, from a trained student or zero-shot CLIP."""

    pairs: Path = reads("pairs.parquet of the retrieval data set")
    model: Path | None = reads("a trained student; without it: zero-shot", optional=True)
    encoder: dict[str, Any] | None = setting("zero-shot encoder entry", optional=True)
    split: str = setting("the split to score (test)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    batch_size: int = setting("images or texts per batch")
    workers: int = setting("image decode workers")
    scores: Path = writes("images x texts similarity (.npy)")
    img_ids: Path = writes("JSON list: the image id of each row")
    txt_img: Path = writes("JSON list: the image id of each text column")


@job("itr-summary", "crossmodal.cusa.summary:run_itr_summary")
class ItrSummary(Job):
    """Every method's retrieval metrics of one data set in one table and one RSUM plot."""

    metrics: list[Path] = reads("itr-eval outputs, in the order of --methods")
    methods: list[str] = setting("the method of each metrics file (zero_shot, cusa, ...)")
    encoder: str = setting("the student encoder's config name")
    config_hash: str = setting("hash of the settings behind these numbers")
    title: str = setting("plot title")
    summary: Path = writes("summary.json")
    plot: Path = writes("RSUM per method (png)")


# --- zero-shot classification (WCA and its baselines) -----------------------------------------


@job("wca-crops", "crossmodal.wca.crops:run_wca_crops")
class WcaCrops(Job):
    """Full image + M seeded random square crops per image -> L2-normalised features (.npy)."""

    images: Path = reads("images.parquet of the collection")
    crops: Path = writes(".npy [n_images, 1 + n_crops, dim]: the full image, then its crops")
    meta: Path = writes("JSON sidecar: image id per row, crop settings, skipped images, provenance")
    encoder: dict[str, Any] = setting("the encoder's config entry")
    n_crops: int = setting("crops per image (M)")
    alpha: float = setting("smallest crop side, as a fraction of the short side (largest 0.9)")
    seed: int = setting("crop seed; each image's crops follow from (seed, image_id)")
    batch_size: int = setting("images per encoder batch (each with 1 + n_crops views)")
    workers: int = setting("decode worker processes")
    dtype: str = setting("storage type of the features: float32 or float16")
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    max_skip_fraction: float = setting("unreadable images tolerated before the stage fails")
    max_pixels: int = setting("larger images are skipped (decompression bombs)")


@job("zeroshot", "crossmodal.wca.stage:run_zeroshot")
class Zeroshot(Job):
    """Zero-shot top-1 of one method (wca, clip, clip-e, clip-d, waffle, cupl) over cached crops."""

    crops: Path = reads("crop features (.npy) of the evaluation collection")
    crops_meta: Path = reads("their sidecar JSON")
    labels: Path = reads("Parquet with image_id and label (index into the classes file)")
    classes: Path = reads("JSON list of class names, in label order")
    prompts: Path | None = reads(
        "the method's prompt file: clip-e templates, clip-d descriptors (clip-d, waffle), "
        "cupl descriptions (cupl, wca)",
        optional=True,
    )
    words: Path | None = reads("JSON word list of Waffle's random words", optional=True)
    result: Path = writes("method, encoder, mean, std, runs, and the images it is over")
    method: str = setting("wca, clip, clip-e, clip-d, waffle or cupl")
    encoder: dict[str, Any] = setting("the encoder's config entry (the one the crops used)")
    encoder_name: str = setting("the encoder's config name (in the result and the summary)")
    seed: int | None = setting("wca: crop draws; waffle: its random descriptors", optional=True)
    n_runs: int | None = setting("wca: runs averaged", optional=True)
    n_sampled: int | None = setting("wca: crops drawn per run, with replacement", optional=True)
    image_scale: float | None = setting("wca: crop weights use e^image_scale", optional=True)
    text_scale: float | None = setting("wca: text weights use e^text_scale", optional=True)
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")


@job("zeroshot-summary", "crossmodal.wca.stage:run_zeroshot_summary")
class ZeroshotSummary(Job):
    """Every zero-shot result of one data set in one table and one bar plot with error bars."""

    results: list[Path] = reads("zeroshot result files, in the order of the rows")
    config_hash: str = setting("hash of the settings behind these numbers")
    title: str = setting("plot title")
    summary: Path = writes("summary.json")
    plot: Path = writes("mean top-1 per method and encoder, std as error bars (png)")


@job("prepare-classification", "crossmodal.wca.data:run_prepare_classification")
class PrepareClassification(Job):
    """An image-classification data set -> images.parquet, labels.parquet, class names, words."""

    sources: list[Path] = reads("files and markers proving the sources are in place")
    images: Path = writes("image_id, path, width, height")
    labels: Path = writes("image_id, label (index into classes.json)")
    classes: Path = writes("JSON list of class names, in label order")
    descriptor_classes: Path = writes("class names CLIP-D's descriptor file is keyed by")
    words: Path = writes("Waffle's word list as a JSON list")
    templates: Path = writes("CLIP-E's templates (checked copy of the source)")
    descriptors: Path = writes("CLIP-D's descriptors (checked copy of the source)")
    report: Path = writes("images per class; files the split lists that are missing")
    layout: str = setting("imagefolder, imagenetv2, cub, oxford_pet, dtd, food101 or place365")
    image_root: Path = setting("folder the layout starts from")
    class_names: Path = setting("the reference's class names: a JSON list, or its utils.py")
    word_source: Path = setting("Waffle's words: the reference's word_list.pkl or a JSON list")
    templates_source: Path = setting("CLIP-E templates: JSON list, each with '{}'")
    descriptors_source: Path = setting("CLIP-D descriptors: JSON {class name: [descriptors]}")
    class_names_key: str | None = setting("utils.py: the list's variable name", optional=True)
    descriptor_names_key: str | None = setting(
        "utils.py: the variable of CLIP-D's class names (ImageNet)", optional=True
    )
    max_missing_fraction: float = setting("listed images missing on disk tolerated")


@job("wca-describe-classes", "crossmodal.wca.describe:run_describe_classes")
class WcaDescribeClasses(Job):
    """CuPL-style descriptions of every class from an LLM, every request journalled."""

    classes: Path = reads("JSON list of class names")
    descriptions: Path = writes("CuPL's format: {class name: [descriptions]}")
    ledger: Path = writes("tokens, cost, requests sent and answered; garbage answers listed")
    llm: dict[str, Any] = setting("the LLM's config entry")
    settings: dict[str, Any] = setting("prompts, n_per_prompt, sampling, min_words, seed")
    journal: Path = setting("journal folder (outside the outputs: survives a crash)")
    chunk: int = setting("requests sent (and journalled) per chunk")
    model: Path | None = reads("a locally built model's config.json", optional=True)


# --- CUSA teacher features ----------------------------------------------------------------------


@job("cusa-image-teacher", "crossmodal.cusa.teachers:run_image_teacher")
class CusaImageTeacher(Job):
    """Teacher features of every unique training image (.npy, one row each) + sidecar."""

    pairs: Path = reads("pairs.parquet of the retrieval data set (its train rows)")
    features: Path = writes("[unique train images, dim] matrix (.npy), first-appearance order")
    meta: Path = writes("sidecar JSON: rows, dim, dtype, ids, ids_sha256, provenance")
    teacher: dict[str, Any] = setting("encoder entry (open_clip, tiny, hf) or a unicom entry")
    output: str = setting("tokens (flattened patch tokens) or pooled (normalised embedding)")
    batch_size: int = setting("images per teacher batch")
    workers: int = setting("decode worker processes")
    dtype: str = setting("storage type: float32 or float16")
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    max_pixels: int = setting("larger images are errors (decompression bombs)")


@job("cusa-text-teacher", "crossmodal.cusa.teachers:run_text_teacher")
class CusaTextTeacher(Job):
    """Sentence-transformers features of every training pair's text (.npy) + sidecar."""

    pairs: Path = reads("pairs.parquet of the retrieval data set (its train rows)")
    features: Path = writes("[train pairs, dim] matrix (.npy), in pairs.parquet order")
    meta: Path = writes("sidecar JSON: rows, dim, dtype, ids_sha256 of the texts, provenance")
    teacher: dict[str, Any] = setting("model (hub name or local folder) and revision")
    batch_size: int = setting("texts per encoder batch")
    dtype: str = setting("storage type: float32 or float16")
    precision: str = setting("auto, fp32 or fp16 (fp16 only on a GPU)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    model: Path | None = reads("a locally built model's modules.json", optional=True)


@job("make-tiny-st", "crossmodal.cusa.teachers:run_make_tiny_st")
class MakeTinySt(Job):
    """Build a tiny random-weight sentence-transformers folder (tests and the demo)."""

    modules: Path = writes("modules.json of the model folder (not config.json: no clash with VLMs)")
    seed: int = setting("seed of the random weights")


# --- compositional image retrieval --------------------------------------------------------------


@job("cir-tagger-data", "crossmodal.cir.tagger_data:run_tagger_data")
class CirTaggerData(Job):
    """Tagger sentences from prompt templates x object names, labelled per word, split."""

    templates: Path = reads("prompt_templates.json of the reference (add / remove slots)")
    objects: Path = reads("objects.txt of the reference (one name a line)")
    sentences: Path = writes("words, labels, template, draw, split (train / heldout)")
    settings: dict[str, Any] = setting("draws_per_template, seed, sort_objects, ... (cir.tagger)")
    sources: list[Path] | None = reads("markers: the lists are in place (demo)", optional=True)


@job("make-tiny-tagger", "crossmodal.cir.stage:run_make_tiny_tagger")
class MakeTinyTagger(Job):
    """Build a tiny random-weight DistilBERT tagger whose vocabulary covers the sentences."""

    sentences: Path = reads("tagger sentences (the vocabulary's corpus)")
    tokenizer: Path = writes("tokenizer.json of the model folder (not config.json: no clash)")
    seed: int = setting("seed of the random weights")


@job("cir-train-tagger", "crossmodal.cir.tagger:run_train_tagger")
class CirTrainTagger(Job):
    """Train the add / remove tagger; token and phrase F1 on the held-out sentences."""

    sentences: Path = reads("tagger sentences with their split")
    model: Path = writes("config.json of the trained tagger folder")
    scores: Path = writes("token and phrase F1 (all, seen and unseen templates), losses")
    settings: dict[str, Any] = setting("epochs, batch_size, learning_rate, ... (cir.tagger)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    base_model: Path | None = reads("a file in a local base model folder", optional=True)
    pretrained: str | None = setting("hub id of the base model", optional=True)
    revision: str | None = setting("hub revision of the base model", optional=True)
    checkpoint: Path | None = setting("per-epoch checkpoint (outside the outputs)", optional=True)


@job("cir-parse", "crossmodal.cir.stage:run_parse")
class CirParse(Job):
    """Every query text's add and remove phrases (tagger, or the fixed training format)."""

    queries: Path = reads("queries.parquet: query_id, query_image_id, query_text, target_image_id")
    edits: Path = writes("query_id, words, labels, add, remove")
    parser: str = setting("tagger, or fixed ('add X and remove Y', the reference's training)")
    device: str = setting("auto, cpu, cuda, cuda:N")
    max_length: int = setting("longest query in tagger sub-tokens")
    tagger: Path | None = reads("config.json of the trained tagger", optional=True)


@job("cir-train-projection", "crossmodal.cir.stage:run_train_projection")
class CirTrainProjection(Job):
    """Fine-tune the image tower's projection on composed queries (InfoNCE)."""

    queries: Path = reads("queries.parquet of the training queries")
    images: Path = reads("images.parquet of their collection")
    edits: Path = reads("their add and remove phrases")
    projection: Path = writes("the projection's weights and the encoder entry")
    log: Path = writes("losses, validation top-1 / R@5 before training and per epoch, split")
    encoder: dict[str, Any] = setting("the encoder entry (open_clip or tiny)")
    settings: dict[str, Any] = setting("epochs, batch_size, learning_rate, ... (cir.projection)")
    compose: dict[str, Any] = setting("add_weight, remove_weight, normalise")
    train_fraction: float = setting("share of the queries trained on, the rest validates")
    split_seed: int = setting("seed of the train / validation shuffle")
    device: str = setting("auto, cpu, cuda, cuda:N")
    checkpoint: Path | None = setting("per-epoch checkpoint (outside the outputs)", optional=True)


@job("cir-embed", "crossmodal.cir.stage:run_embed")
class CirEmbed(Job):
    """Composed query embeddings and database embeddings from one model (+ projection)."""

    queries: Path = reads("queries.parquet")
    images: Path = reads("images.parquet of their collection")
    edits: Path = reads("the queries' add and remove phrases")
    query_features: Path = writes("query_id, embedding (composed, L2-normalised)")
    database_features: Path = writes("image_id, embedding (L2-normalised)")
    encoder: dict[str, Any] = setting("the encoder entry (open_clip or tiny)")
    compose: dict[str, Any] = setting("add_weight, remove_weight, normalise")
    database: str = setting("targets (the query set's unique targets) or collection")
    device: str = setting("auto, cpu, cuda, cuda:N")
    batch_size: int = setting("images per encoder batch")
    workers: int = setting("image decode workers")
    projection: Path | None = reads("a fine-tuned projection; without it: untrained", optional=True)


@job("cir-eval", "crossmodal.cir.stage:run_eval")
class CirEval(Job):
    """Top-1 and R@k of composed queries against a FAISS index of the database."""

    queries: Path = reads("queries.parquet (the target of each query)")
    query_features: Path = reads("composed query embeddings")
    index: Path = reads("FAISS index of the database embeddings")
    metrics: Path = writes("top1, r5, n_queries, n_database")
    rankings: Path = writes("query_id, ranked_ids, scores")
    ks: list[int] = setting("the k of each R@k (1 is top-1)")


@job("prepare-cir", "crossmodal.cir.data:run_prepare_cir")
class PrepareCir(Job):
    """Challenge CSV (query_image, query_text, target_image) + image folder -> Parquet."""

    sources: list[Path] = reads("markers proving the files are in place (the demo world)")
    csv: Path = setting("the split's CSV: query_image, query_text, target_image")
    image_dir: Path = setting("the folder of the images the CSV names")
    max_missing_fraction: float = setting("share of rows whose missing images may be dropped")
    queries: Path = writes("query_id, query_image_id, query_text, target_image_id")
    images: Path = writes("image_id, path, width, height (every image of the folder)")
    missing: Path = writes("images the CSV names that are absent or unreadable, rows each")


@job("cir-summary", "crossmodal.cir.summary:run_cir_summary")
class CirSummary(Job):
    """Untrained and fine-tuned top-1 / R@5 of one data set, with the tagger's F1, and a plot."""

    metrics: list[Path] = reads("cir-eval outputs, in the order of --methods")
    methods: list[str] = setting("the method of each metrics file (untrained, finetuned)")
    tagger_scores: Path | None = reads("the tagger's scores (no tagger: none)", optional=True)
    encoder: str = setting("the encoder's config name")
    config_hash: str = setting("hash of the settings behind the numbers")
    title: str = setting("plot title")
    summary: Path = writes("summary.json: rows of method, top1, r5, tagger_f1, ...")
    plot: Path = writes("top-1 and R@5 per method (png)")


@job("cir-query", "crossmodal.cir.stage:run_query")
class CirQuery(Job):
    """Answer one query (an image + a modification text) from a built database index."""

    image: Path = reads("the reference image")
    text: str = setting("the modification text, e.g. 'remove the cat and add a dog'")
    index: Path = reads("FAISS index of the database embeddings (cir-embed + build-index)")
    tagger: Path = reads("config.json of the trained tagger")
    encoder: dict[str, Any] = setting("the encoder entry the index was built with")
    compose: dict[str, Any] = setting("add_weight, remove_weight, normalise")
    k: int = setting("how many image ids to print")
    device: str = setting("auto, cpu, cuda, cuda:N")
    max_length: int = setting("longest query in tagger sub-tokens")
    projection: Path | None = reads("the fine-tuned projection the index used", optional=True)
    images: Path | None = reads("images.parquet: print each id's path too", optional=True)
    out: Path | None = setting("also write the answer as JSON here", optional=True)


# --- dialogue-to-photo retrieval ----------------------------------------------------------------


@job("dialog-prepare", "crossmodal.dialog.data:run_prepare_dialogs")
class DialogPrepare(Job):
    """PhotoChat JSON shards of one split -> dialogues.parquet (turns before the photo)."""

    shards: list[Path] = reads("the split's JSON shards, e.g. test_00.json test_01.json")
    split: str = setting("train, dev or test")
    dialogues: Path = writes("split, dialogue_id, turns, photo_description, photo_url, photo_id")


@job("dialog-photos", "crossmodal.dialog.data:run_dialog_photos")
class DialogPhotos(Job):
    """Every photo of the dialogues: fetched with retries or read from a mirror; status table."""

    dialogues: list[Path] = reads("dialogues tables whose photos are needed")
    photos: Path = writes("photo_id, url, status (ok/cached/mirror/failed), path, attempts, error")
    folder: Path = setting("where fetched photos are kept (outside the outputs: kept on reruns)")
    fetch: dict[str, Any] = setting("retries, timeout, backoff, workers, max_bytes")
    mirror: str | None = setting("data.mirrors.photochat: {photo_id}.jpg files", optional=True)
    sources: list[Path] | None = reads("markers proving a mirror is in place (demo)", optional=True)


@job("dialog-describe", "crossmodal.dialog.stage:run_describe")
class DialogDescribe(Job):
    """LLM visual descriptors of every dialogue, journalled; parse, one repair, fallback."""

    dialogues: Path = reads("dialogues.parquet of one split")
    descriptors: Path = writes("dialogue_id, status, values (JSON), text, answer, problem")
    ledger: Path = writes("tokens, cost, requests sent / from the journal, ok/repaired/fallback")
    llm: dict[str, Any] = setting("the llms entry (any generation backend)")
    settings: dict[str, Any] = setting("max_tokens, temperature, seed (dialog.descriptor)")
    journal: Path = setting("journal folder (outside the outputs)")
    chunk: int = setting("requests journalled at a time")
    model: Path | None = reads("a locally built model's config.json", optional=True)


@job("dialog-train", "crossmodal.dialog.train:run_dialog_train")
class DialogTrain(Job):
    """Fine-tune CLIP on (descriptor text, photo) pairs under torchrun; checkpoints, resume."""

    dialogues: Path = reads("dialogues.parquet of the training split")
    descriptors: Path = reads("descriptors of the training split")
    photos: Path = reads("photo status table (photos that could not be had are excluded)")
    model: Path = writes("the fine-tuned weights and the encoder entry")
    history: Path = writes("per-epoch losses and temperature, pairs used and excluded")
    student: dict[str, Any] = setting("the encoder entry to fine-tune (open_clip, tiny or hf)")
    loss: str = setting("infonce (symmetric, learnable temperature) or one_way (fixed tau)")
    tau: float = setting("one_way: the fixed temperature")
    epochs: int = setting("epochs")
    batch_size: int = setting("pairs per batch per process")
    lr: float = setting("AdamW learning rate")
    weight_decay: float = setting("AdamW weight decay")
    seed: int = setting("seed (+ rank per process)")
    device: str = setting("auto, cpu, cuda")
    workers: int = setting("data loader workers")
    checkpoints: Path = setting("checkpoint folder (outside the outputs)")
    checkpoint_every: int = setting("steps between mid-epoch checkpoints (0: epoch ends only)")


@job("dialog-embed", "crossmodal.dialog.stage:run_embed")
class DialogEmbed(Job):
    """Descriptor and candidate photo embeddings (raw) of the test split, zero-shot or tuned."""

    dialogues: Path = reads("dialogues.parquet of the test split")
    descriptors: Path = reads("descriptors of the test split")
    photos: Path = reads("photo status table")
    queries: Path = writes("dialogue_id, photo_id, embedding (raw) of every usable dialogue")
    candidates: Path = writes("photo_id, embedding (raw) of every available candidate photo")
    encoder: dict[str, Any] = setting("the encoder entry (open_clip or tiny)")
    batch_size: int = setting("items per encoder batch")
    device: str = setting("auto, cpu, cuda")
    model: Path | None = reads("fine-tuned weights; without them: zero-shot", optional=True)


@job("dialog-search", "crossmodal.dialog.stage:run_search")
class DialogSearch(Job):
    """FAISS index of the candidates, the full score matrix and predictions.csv (top k)."""

    queries: Path = reads("query embeddings")
    candidates: Path = reads("candidate photo embeddings")
    index: Path = writes("FAISS index of the candidates")
    scores: Path = writes("queries x candidates scores (.npy; higher is better)")
    candidate_ids: Path = writes("photo id of each score column (JSON)")
    truth: Path = writes("photo id of each score row's dialogue (JSON)")
    excluded: Path = writes("dialogue_id -> reason for dialogues left out (JSON)")
    predictions: Path = writes("dialogue_id, rank_1 .. rank_k photo ids (CSV)")
    metric: str = setting("ip (inner product on normalised embeddings) or l2 (on raw ones)")
    top: int = setting("ranked photo ids per dialogue in predictions.csv")


@job("dialog-eval", "crossmodal.dialog.metrics:run_dialog_eval")
class DialogEval(Job):
    """R@1/5/10 and hit@30 from a score matrix; the denominator names the excluded dialogues."""

    scores: Path = reads("queries x candidates scores (.npy; higher is better)")
    candidate_ids: Path = reads("photo id of each column (JSON list)")
    truth: Path = reads("photo id of each row's dialogue (JSON list)")
    excluded: Path = reads("dialogue_id -> reason for dialogues left out (JSON object)")
    out: Path = writes("metrics JSON")
    ks: list[int] = setting("the k of each R@k")
    hit_k: int = setting("k of hit@k")


@job("dialog-summary", "crossmodal.dialog.summary:run_dialog_summary")
class DialogSummary(Job):
    """zero_shot and finetuned dialogue retrieval metrics of one data set: table and plot."""

    metrics: list[Path] = reads("dialog-eval outputs, in the order of --methods")
    methods: list[str] = setting("the method of each metrics file (zero_shot, finetuned)")
    encoder: str = setting("the encoder's config name")
    llm: str = setting("the descriptor LLM's config name")
    config_hash: str = setting("hash of the settings behind these numbers")
    title: str = setting("plot title")
    summary: Path = writes("summary.json")
    plot: Path = writes("R@1/5/10 and hit@30 per method (png)")


@job("make-dialog-demo", "crossmodal.dialog.demo:run_make_dialog_demo")
class MakeDialogDemo(Job):
    """The demo world's dialogues (PhotoChat layout) that lead up to sharing a generated photo."""

    train: Path = writes("train shard (PhotoChat JSON layout)")
    test: Path = writes("test shard")
    photos: Path = writes("marker in the photo folder ({photo_id}.png files beside it)")
    seed: int = setting("seed of the world")
    n_train: int = setting("training dialogues")
    n_test: int = setting("test dialogues (their photos are the candidates)")
