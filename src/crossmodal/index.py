"""FAISS indexes over L2-normalised embeddings (inner product = cosine), ids = image_id.

Kinds: ``flat`` (exact), ``ivf`` (IVF-Flat, trained on the data) and ``hnsw``. The index stored
on disk is always the CPU form; ``load_index`` moves flat and IVF indexes to a GPU when
faiss-gpu and a GPU are present. ``search`` takes a batch of queries, k, and a per-query list of
ids to exclude (ReCoD never retrieves the same image twice for one target).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from crossmodal.errors import CrossmodalError
from crossmodal.io import atomic_path, write_json

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass(frozen=True)
class IndexParams:
    kind: str = "flat"
    nlist: int = 1024  # IVF cells (capped at n/39 so every cell gets training points)
    nprobe: int = 32  # IVF cells visited per query
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 200
    ef_search: int = 128
    seed: int = 0


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    vectors: np.ndarray, ids: np.ndarray, params: IndexParams, metric: str = "ip"
) -> faiss.Index:
    """An ID-mapped index over ``vectors`` (float32): inner product (callers normalise: cosine)
    or, with ``metric="l2"``, Euclidean distance (nearest first)."""
    if params.kind not in KINDS:
        raise CrossmodalError(f"index kind {params.kind!r} unknown; choose one of {KINDS}")
    if metric not in METRICS:
        raise CrossmodalError(f"index metric {metric!r} unknown; choose one of {list(METRICS)}")
    faiss_metric = METRICS[metric]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if params.kind == "flat":
        base: faiss.Index = faiss.IndexFlat(d, faiss_metric)
    elif params.kind == "ivf":
        nlist = max(1, min(params.nlist, n // 39))
        quantizer = faiss.IndexFlat(d, faiss_metric)
        base = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
        base.cp.seed = params.seed
        base.train(vectors)
        base.nprobe = min(params.nprobe, nlist)
    else:
        base = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss_metric)
        base.hnsw.efConstruction = params.ef_construction
        base.hnsw.efSearch = params.ef_search
    index = faiss.IndexIDMap2(base)
    index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def save_index(
    index: faiss.Index, path: str | Path, meta: dict[str, Any], meta_path: str | Path | None = None
) -> None:
    """Write the index and a JSON sidecar (kind, size, provenance) atomically; the sidecar goes
    to ``meta_path``, by default beside the index with a ``.json`` suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(meta_path or path.with_suffix(".json"), {"ntotal": int(index.ntotal), **meta})


def run_build_index(job) -> faiss.Index:
    """The ``build-index`` stage (a :class:`crossmodal.stages.BuildIndex` job): the index and
    a sidecar recording its parameters and the provenance of the features it holds."""
    from crossmodal.features import read_embeddings
    from crossmodal.io import read_provenance

    params = IndexParams(**job.params)
    ids, vectors = read_embeddings(job.features)
    index = build_index(vectors, ids, params)
    meta = {
        "params": dataclasses.asdict(params),
        "features": str(job.features),
        "features_provenance": read_provenance(job.features),
    }
    save_index(index, job.index, meta, job.meta)
    log.info("%s index of %d vectors -> %s", params.kind, index.ntotal, job.index)
    return index


def load_index(
    path: str | Path,
    *,
    use_gpu: bool | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> faiss.Index:
    """Read an index; move it to the GPU when asked (or, with ``None``, when one is present)."""
    index = faiss.read_index(str(path))
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if nprobe is not None and isinstance(base, faiss.IndexIVF):
        base.nprobe = nprobe
    if ef_search is not None and isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = ef_search
    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu and not isinstance(base, faiss.IndexHNSW):
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
        index._gpu_resources = res  # keep the resources alive with the index
    return index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores per query, never returning an id in that query's exclude list.

    Over-fetches ``k + len(exclude)`` so exact search always fills k results; approximate
    indexes that come up short are searched again with a doubled budget. Missing slots (fewer
    than k eligible vectors) hold id -1 and score -inf.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(queries)
    exclude_sets = [set(map(int, e)) for e in exclude] if exclude is not None else [set()] * nq
    if len(exclude_sets) != nq:
        raise ValueError(f"{len(exclude_sets)} exclude lists for {nq} queries")
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    todo = np.arange(nq)
    fetch = k + max((len(e) for e in exclude_sets), default=0)
    while len(todo):
        fetch_now = min(fetch, int(index.ntotal))
        scores, ids = index.search(queries[todo], fetch_now)
        short = []
        for row, q in enumerate(todo):
            keep = [
                (i, s)
                for i, s in zip(ids[row], scores[row], strict=True)
                if i != -1 and int(i) not in exclude_sets[q]
            ]
            got = keep[:k]
            out_ids[q, : len(got)] = [i for i, _ in got]
            out_scores[q, : len(got)] = [s for _, s in got]
            if len(got) < k and fetch_now < index.ntotal:
                short.append(q)
        todo = np.array(short, dtype=np.int64)
        fetch *= 2
    return out_ids, out_scores
