"""Request journal: crash-safe resume for generation stages, and a token/cost ledger.

Every finished request is appended to a JSON-lines journal and flushed to disk at once. A
journal entry is keyed by everything that decides its answer: the generator's identity (backend,
model, revision, the settings that change outputs, a hash of the backend's code, the content of
a local model folder), the request itself, and the *content* of every image it carries. Change
the model, its settings or an image file and the old answers are simply not found: nothing is
replayed from another model or another picture.

The journal lives in a folder outside the rule's declared outputs, so Snakemake does not delete
it when a job dies. A job reads every journal file of its folder (other shards' too, so a new
shard count reuses every answer) and appends to its own file only. Failed requests are not
journalled: a rerun retries them. An empty answer is an answer (requests are seeded: a retry
would give it again) and is counted in the ledger.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossmodal.codehash import code_digest, package_root
from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import Request, Response

log = logging.getLogger(__name__)

# Config keys that change how requests travel, never what comes back: not part of the identity.
# (``gpus`` is part of it: for vLLM it decides CPU or GPU serving and tensor parallelism.)
OPERATIONAL_KEYS = frozenset(
    {
        "max_in_flight",
        "timeout",
        "max_retries",
        "backoff",
        "startup_timeout",
        "mem_mb",
        "price",
        "api_key_env",
    }
)
# Per backend, more keys that cannot change an answer: the Anthropic API is the Anthropic API
# wherever it is reached from, and the API backends use no local GPUs. (``base_url`` of an
# OpenAI-compatible or vLLM entry names the server, and so the weights: part of the identity.)
OPERATIONAL_FOR = {
    "anthropic": frozenset({"base_url", "gpus"}),
    "openai": frozenset({"gpus"}),
}
# The module whose code (with what it imports) makes each backend's answers.
BACKEND_MODULES = {
    "transformers": "crossmodal.generation.transformers_backend",
    "openai": "crossmodal.generation.openai_backend",
    "vllm": "crossmodal.generation.vllm_backend",
    "anthropic": "crossmodal.generation.anthropic_backend",
}


def _sample_digest(path: Path, block: int = 1 << 20) -> str:
    """Size plus the first and last MiB: a fast fingerprint for multi-GB weight files."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(block))
        if path.stat().st_size > block:
            fh.seek(-block, os.SEEK_END)
            h.update(fh.read(block))
    return h.hexdigest()


def model_folder_digest(folder: Path) -> str:
    """Fingerprint of a local model folder: every file's name, size, first and last MiB.

    A rebuilt or replaced model under the same path gets a new identity; hashing every byte
    of a 26 GB checkpoint for every job would cost minutes.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + _sample_digest(f).encode())
    return h.hexdigest()


def generator_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What decides a generator's answers: its output-relevant settings, its code, its weights.

    Keys the entry leaves out count with their schema defaults, so a spelled-out default and a
    left-out one are the same generator."""
    from crossmodal.config import with_backend_defaults

    backend = spec["backend"]
    if backend not in BACKEND_MODULES:
        raise CrossmodalError(f"generation backend {backend!r} unknown")
    spec = with_backend_defaults("llms", spec)
    operational = OPERATIONAL_KEYS | OPERATIONAL_FOR.get(backend, frozenset())
    identity: dict[str, Any] = {
        "settings": {k: v for k, v in sorted(spec.items()) if k not in operational},
        "code": code_digest(package_root(), BACKEND_MODULES[backend], whole=False),
    }
    if backend == "transformers":  # "auto" means float16 on a GPU, float32 on the CPU
        from crossmodal.encoders.base import resolve_device

        identity["runs_on"] = resolve_device(spec["device"]).type
    folder = Path(spec["model"])
    if backend != "anthropic" and folder.is_dir():
        identity["weights"] = model_folder_digest(folder)
    return identity


class ImageDigests:
    """sha256 of image files, computed once per file version (path, size, mtime)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise CrossmodalError(f"image {path} of a request cannot be read ({exc})") from exc
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return self._cache[key]


def request_key(req: Request, identity_digest: str, image_digest: Callable[[str], str]) -> str:
    """The journal key: generator identity + request, images by content instead of by path."""
    payload = dataclasses.asdict(req)
    for message in payload["messages"]:
        for part in message["parts"]:
            if part["kind"] == "image":
                part["value"] = "sha256:" + image_digest(part["value"])
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((identity_digest + "\0" + text).encode()).hexdigest()


class Journal:
    """Answers journalled in ``folder`` (every ``*.jsonl`` in it); this job appends to ``own``."""

    def __init__(self, folder: str | Path, own: str = "journal.jsonl"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / own
        self.done: dict[str, Response] = {}
        self.sent_keys: list[str] = []  # every key sent by this process
        self.torn_lines = 0
        for f in sorted(self.folder.glob("*.jsonl")):
            self._load(f)
        if self.torn_lines:
            log.warning(
                "%d torn journal line(s) in %s (a kill mid-write); those requests are redone",
                self.torn_lines,
                self.folder,
            )

    def _load(self, path: Path) -> None:
        with path.open() as fh:
            for number, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    self.torn_lines += 1
                    continue
                if not isinstance(rec, dict) or "key" not in rec or "response" not in rec:
                    raise CrossmodalError(
                        f"{path}:{number}: not a journal record; move the file away and rerun"
                    )
                try:
                    self.done[rec["key"]] = Response.from_record(rec["response"])
                except TypeError as exc:  # a field this version does not know
                    raise CrossmodalError(
                        f"{path}:{number}: a journal record this version cannot read ({exc}); "
                        "it was written by another version of crossmodal"
                    ) from exc

    def _end_torn_line(self) -> None:
        """A kill mid-write leaves a last line without its newline; end it, so the next record
        starts a line of its own instead of gluing onto the torn one."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            with self.path.open("a") as fh:
                fh.write("\n")

    def record(self, key: str, response: Response) -> None:
        self._end_torn_line()
        rec = {"key": key, "response": dataclasses.asdict(response)}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[key] = response


def run_journaled(
    generate: Callable[[list[Request]], list[Response]],
    requests: Sequence[Request],
    keys: Sequence[str],
    journal: Journal,
    *,
    chunk: int,
) -> list[Response]:
    """Answer ``requests`` from the journal where possible, generating only the rest.

    Identical requests are generated once. Work is sent in chunks and journalled after each, so a
    kill loses at most one chunk of work. A failed request comes back with ``error`` set.
    """
    todo: dict[str, Request] = {}
    for k, r in zip(keys, requests, strict=True):
        if k not in journal.done and k not in todo:
            todo[k] = r
    failed: dict[str, Response] = {}
    pending = list(todo.items())
    for start in range(0, len(pending), chunk):
        part = pending[start : start + chunk]
        journal.sent_keys.extend(k for k, _ in part)
        for (k, _), resp in zip(part, generate([r for _, r in part]), strict=True):
            if resp.ok:
                journal.record(k, resp)
            else:
                failed[k] = resp
    return [journal.done[k] if k in journal.done else failed[k] for k in keys]


@dataclass
class Ledger:
    """Tokens in/out per model and their cost from a price table (USD per million tokens)."""

    model: str
    prices: dict[str, float]
    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0
    empty_answers: int = 0

    def add(self, responses: Sequence[Response], empty: Sequence[bool]) -> None:
        for r in responses:
            self.tokens_in += r.tokens_in
            self.tokens_out += r.tokens_out
        self.requests += len(responses)
        self.empty_answers += sum(empty)

    def as_dict(self) -> dict:
        cost = (
            self.tokens_in * self.prices.get("input", 0.0)
            + self.tokens_out * self.prices.get("output", 0.0)
        ) / 1e6
        return {
            "model": self.model,
            "requests": self.requests,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "empty_answers": self.empty_answers,
            "cost_usd": round(cost, 6),
            "prices_usd_per_mtok": self.prices,
        }


class JournaledGenerator:
    """A configured generator behind a journal and a ledger: how every stage sends requests.

    Call it with a list of requests; answered ones come from the journal, the rest are sent
    and journalled. ``stats()`` is the ledger plus how much was sent versus answered from the
    journal. The backend is built on first need: a job whose answers are all journalled never
    loads a model or starts a server. Use it as a context manager so the backend is closed.
    """

    def __init__(
        self, spec: dict[str, Any], journal_folder: str | Path, *, own: str, chunk: int
    ) -> None:
        self.spec = spec
        self.identity = generator_identity(spec)
        digest_input = json.dumps(self.identity, sort_keys=True, separators=(",", ":"))
        self.identity_digest = hashlib.sha256(digest_input.encode()).hexdigest()
        self.journal = Journal(journal_folder, own)
        self.ledger = Ledger(spec["model"], spec.get("price") or {})
        self.chunk = chunk
        self.requested: set[str] = set()
        self.sampling: dict[str, list[float]] = {}  # field -> every value requested
        self._images = ImageDigests()
        self._generator = None

    def _generate(self, requests: list[Request]) -> list[Response]:
        if self._generator is None:
            from crossmodal.generation.registry import build_generator

            self._generator = build_generator(self.spec)
        return self._generator.generate(requests)

    def keys(self, requests: Sequence[Request]) -> list[str]:
        return [request_key(r, self.identity_digest, self._images) for r in requests]

    def __call__(self, requests: list[Request]) -> list[Response]:
        keys = self.keys(requests)
        self.requested.update(keys)
        for req in requests:
            for name, value in {"max_tokens": req.max_tokens, **req.sampling()}.items():
                self.sampling.setdefault(name, []).append(value)
        responses = run_journaled(self._generate, requests, keys, self.journal, chunk=self.chunk)
        self.ledger.add(responses, [r.empty for r in responses])
        return responses

    def stats(self) -> dict:
        sent = len(set(self.journal.sent_keys))
        stats = {
            **self.ledger.as_dict(),
            "sent": sent,
            "answered_from_journal": len(self.requested) - sent,
            "torn_journal_lines": self.journal.torn_lines,
            "generator_identity": self.identity,
            "sampling_sent": {
                name: {"requests": len(v), "min": min(v), "max": max(v)}
                for name, v in sorted(self.sampling.items())
            },
        }
        log.info(
            "%s: %d answers from the journal, %d requests sent (%d empty answers)",
            self.ledger.model,
            stats["answered_from_journal"],
            sent,
            self.ledger.empty_answers,
        )
        return stats

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()

    def __enter__(self) -> JournaledGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
