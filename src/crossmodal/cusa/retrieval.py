"""Image-text similarity matrices for an evaluation split, from any pair of encoders.

Used after every training epoch (model selection) and by the ``itr-scores`` stage, for trained
students and for the zero-shot encoder alike, so that both are scored by the same code:
embeddings L2-normalised, ``S = images @ texts.T`` (the reference's ``get_similarity``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal.cusa.pairs import EvalSplit, read_eval_split
from crossmodal.errors import DataFormatError
from crossmodal.images import load_image
from crossmodal.io import atomic_path, write_json

log = logging.getLogger(__name__)

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


class ImageFiles(Dataset):
    """Images by path through a transform; an unreadable image is an error naming it.

    Retrieval is scored over every image of the split (a left-out image would change the
    metric's denominator), so nothing is skipped."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(read_rgb(self.paths[i]))


def read_rgb(path: str):
    """Decode an image fully, or raise an error that names it and the reason."""
    loaded = load_image(path, max_pixels=None)
    if loaded.error:
        raise DataFormatError(
            f"{path}: {loaded.error}; image-text retrieval needs every image of the split "
            "(replace the file, or remove its rows from the split files and prepare again)"
        )
    return loaded.image


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


@torch.no_grad()
def similarity(
    split: EvalSplit,
    encode_image: EncodeFn,
    encode_text: EncodeFn,
    preprocess: Callable,
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: torch.device,
    batch_size: int,
    workers: int,
) -> np.ndarray:
    """``[images, texts]`` cosine similarities (float32) of one evaluation split."""
    loader = DataLoader(
        ImageFiles(split.paths, preprocess), batch_size=batch_size, num_workers=workers
    )
    images = [
        _unit(encode_image(px.to(device)).float())
        for px in tqdm(loader, desc="itr images", leave=False)
    ]
    texts = []
    for start in range(0, len(split.texts), batch_size):
        tokens = tokenizer(split.texts[start : start + batch_size]).to(device)
        texts.append(_unit(encode_text(tokens).float()))
    return (torch.cat(images) @ torch.cat(texts).t()).cpu().numpy().astype(np.float32)


def write_scores(
    out_scores: Path,
    out_img_ids: Path,
    out_txt_img: Path,
    scores: np.ndarray,
    split: EvalSplit,
) -> None:
    """The three plain files ``itr-eval`` reads (and the reference's evaluator could)."""
    with atomic_path(out_scores) as tmp, tmp.open("wb") as fh:
        np.save(fh, scores)
    write_json(out_img_ids, split.image_ids)
    write_json(out_txt_img, split.text_image)


def run_itr_scores(job: Any) -> None:
    """The ``itr-scores`` stage: a trained student's (or the zero-shot encoder's) matrix."""
    from crossmodal.cusa.model import load_student
    from crossmodal.encoders import resolve_device
    from crossmodal.encoders.registry import load_trainable_clip

    device = resolve_device(job.device)
    split = read_eval_split(job.pairs, job.split)
    if job.model is None:
        clip = load_trainable_clip(job.encoder, device=str(device))
        model = clip.model.eval()
        encode_image, encode_text = model.encode_image, model.encode_text
        preprocess, tokenizer = clip.preprocess, clip.tokenizer
        log.info("zero-shot %s", job.encoder)
    else:
        student, clip = load_student(job.model, device)
        encode_image, encode_text = student.encode_image, student.encode_text
        preprocess, tokenizer = clip.preprocess, clip.tokenizer
        log.info("trained student %s", job.model)
    scores = similarity(
        split, encode_image, encode_text, preprocess, tokenizer, device, job.batch_size, job.workers
    )
    write_scores(job.scores, job.img_ids, job.txt_img, scores, split)
    log.info("%d images x %d texts of split %s", *scores.shape, job.split)
