"""Request journal: crash-safe resume for generation stages, and a token/cost ledger.

Every finished request is appended to a JSON-lines journal (keyed by the request's content hash)
and flushed to disk at once. The journal lives outside the rule's declared outputs, so Snakemake
does not delete it when a job dies; a rerun reads it and sends only what is missing. Failed
requests are not journalled: a rerun retries them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crossmodal.generation.types import Request, Response


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, Response] = {}
        self.sent_keys: list[str] = []  # every key sent by this process (tests read it)
        if self.path.exists():
            with self.path.open() as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a kill: that request is simply redone
                    self.done[rec["key"]] = Response(**rec["response"])

    def record(self, key: str, response: Response) -> None:
        rec = {"key": key, "response": response.__dict__}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[key] = response


def run_journaled(
    generate: Callable[[list[Request]], list[Response]],
    requests: Sequence[Request],
    journal: Journal,
    *,
    chunk: int = 64,
    keys: Sequence[str] | None = None,
) -> list[Response]:
    """Answer ``requests`` from the journal where possible, generating only the rest.

    Identical requests are generated once. Work is sent in chunks and journalled after each, so a
    kill loses at most one chunk of work. A failed request comes back with ``error`` set.
    ``keys``: the requests' keys when the caller has them already (hashing long prompts is
    not free).
    """
    keys = [r.key() for r in requests] if keys is None else keys
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

    def add(self, responses: Sequence[Response]) -> None:
        for r in responses:
            self.tokens_in += r.tokens_in
            self.tokens_out += r.tokens_out
        self.requests += len(responses)

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
            "cost_usd": round(cost, 6),
            "prices_usd_per_mtok": self.prices,
        }


class JournaledGenerator:
    """A configured generator behind a journal and a ledger: how every stage sends requests.

    Call it with a list of requests; answered ones come from the journal, the rest are sent
    and journalled. ``stats()`` is the ledger plus how much was sent versus answered from the
    journal. Use it as a context manager so the backend (a vLLM server, say) is always closed.
    """

    def __init__(self, spec: dict, journal_path: str | Path, *, chunk: int = 64):
        from crossmodal.generation.registry import build_generator

        self.journal = Journal(journal_path)
        self.ledger = Ledger(spec.get("model", "?"), spec.get("price", {}))
        self.chunk = chunk
        self.requested: set[str] = set()
        self._generator = build_generator(spec)

    def __call__(self, requests: list[Request]) -> list[Response]:
        keys = [r.key() for r in requests]
        self.requested.update(keys)
        responses = run_journaled(
            self._generator.generate, requests, self.journal, chunk=self.chunk, keys=keys
        )
        self.ledger.add(responses)
        return responses

    def stats(self) -> dict:
        sent = len(set(self.journal.sent_keys))
        return {
            **self.ledger.as_dict(),
            "sent": sent,
            "answered_from_journal": len(self.requested) - sent,
        }

    def close(self) -> None:
        self._generator.close()

    def __enter__(self) -> JournaledGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
