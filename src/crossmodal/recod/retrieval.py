"""Text-to-image retrieval for ReCoD.

The reference scores every image by the mean of its similarities to the description's
sentences. Since similarity is linear, that equals one query, the mean of the normalised sentence
embeddings, against the index; all targets of a loop are embedded and searched as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossmodal.encoders import ClipEncoder
from crossmodal.index import search


def mean_sentence_queries(
    encoder: ClipEncoder, descriptions: Sequence[Sequence[str]]
) -> np.ndarray:
    """One query per target: the mean of its normalised sentence embeddings."""
    flat = [s for sentences in descriptions for s in sentences]
    emb = encoder.encode_texts(flat)
    queries = np.zeros((len(descriptions), encoder.dim), dtype=np.float32)
    start = 0
    for i, sentences in enumerate(descriptions):
        n = len(sentences)
        if n:
            queries[i] = emb[start : start + n].mean(axis=0)
        start += n
    return queries


def retrieve(
    encoder: ClipEncoder,
    index,
    descriptions: Sequence[Sequence[str]],
    exclude: Sequence[Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Best image per target not in its exclude list: (ids, scores = mean sentence similarity)."""
    ids, scores = search(index, mean_sentence_queries(encoder, descriptions), 1, exclude)
    return ids[:, 0], scores[:, 0]
