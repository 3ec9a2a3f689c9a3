"""PICa: knowledge-based VQA by prompting an LLM with image descriptions as context.

Faithful to microsoft/PICa: the header, the Context/Q/A blocks and the separators; in-context
examples are training questions ranked by question-feature similarity plus image-feature
similarity (``imagequestion``), most similar first, ``n_shot`` per prompt and ``n_ensemble``
prompts using consecutive ranks; greedy decoding, at most 5 tokens, stop at a newline; the
ensemble member with the highest summed token log-probability wins. Backends that return no
log-probabilities use a majority vote over the cleaned answers (ties: the member built from
the most similar examples). Examples use their image's description and the first annotator's
answer (``answers[0]``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crossmodal.generation.types import Request, Response, raise_for_failures, text, user
from crossmodal.jobs import settings_from_dict

HEADER = "Please answer the question according to the above context.\n===\n"


@dataclass(frozen=True)
class PicaSettings:
    """No defaults here: the config schema has them (16 shots, 5 prompts, 5 tokens, " ")."""

    n_shot: int
    n_ensemble: int
    max_tokens: int
    join: str  # how a question image's first k descriptions become one Context string

    @classmethod
    def from_dict(cls, values: dict) -> PicaSettings:
        return settings_from_dict(cls, values, "PICa settings")


@dataclass(frozen=True)
class Example:
    context: str
    question: str
    answer: str


def process_answer(answer: str) -> str:
    """PICa's answer clean-up: drop periods and commas, lower-case, drop a/an/the/to."""
    answer = answer.replace(".", "").replace(",", "").lower()
    drop = {"a", "an", "the", "to", ""}
    return " ".join(w for w in answer.split(" ") if w not in drop)


def build_prompt(examples: Sequence[Example], context: str, question: str) -> str:
    prompt = HEADER
    for ex in examples:
        prompt += f"Context: {ex.context}\n===\n"
        prompt += f"Q: {ex.question}\nA: {ex.answer}\n\n===\n"
    prompt += f"Context: {context}\n===\n"
    prompt += f"Q: {question}\nA:"
    return prompt


def rank_examples(
    q_val: np.ndarray,
    img_val: np.ndarray,
    q_train: np.ndarray,
    img_train: np.ndarray,
    n: int,
    chunk: int = 1024,
) -> np.ndarray:
    """Indices of the ``n`` most similar training questions per target, best first.

    Similarity = question·question + image·image. Ties are broken by training index (stable),
    where the reference's unstable argsort leaves them arbitrary.
    """
    n = min(n, len(q_train))
    out = np.empty((len(q_val), n), dtype=np.int64)
    for start in range(0, len(q_val), chunk):
        sim = (
            q_val[start : start + chunk] @ q_train.T + img_val[start : start + chunk] @ img_train.T
        )
        out[start : start + chunk] = np.argsort(-sim, axis=1, kind="stable")[:, :n]
    return out


def pica_request(prompt: str, settings: PicaSettings) -> Request:
    return Request(
        (user(text(prompt)),),
        max_tokens=settings.max_tokens,
        temperature=0.0,
        top_p=1.0,
        seed=0,
        logprobs=True,
        stop=("\n",),
        raw=True,
    )


def choose(responses: Sequence[Response]) -> tuple[str, str]:
    """(answer, rule): highest summed log-probability, else majority vote."""
    answers = [process_answer(r.text) for r in responses]
    if all(r.logprobs is not None for r in responses):
        best, best_lp = answers[0], -999.0
        for ans, r in zip(answers, responses, strict=True):
            lp = float(sum(r.logprobs))
            if lp > best_lp:  # strict: the first of equals wins, as in the reference
                best, best_lp = ans, lp
        return best, "logprob"
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top), "majority"


def map_to_choices(
    answers: Sequence[str],
    choices: Sequence[Sequence[str]],
    embed: Callable[[list[str]], np.ndarray],
) -> list[str]:
    """A-OKVQA multiple choice from a direct answer: the choice equal to it after PICa's
    clean-up, else the choice nearest to it by text-embedding similarity (PICa itself answers
    free-form only; this mapping is this pipeline's choice, documented in the README)."""
    out: list[str | None] = []
    unmatched = []
    for answer, options in zip(answers, choices, strict=True):
        cleaned = [process_answer(" " + c) for c in options]
        out.append(options[cleaned.index(answer)] if answer in cleaned else None)
        if out[-1] is None:
            unmatched.append(len(out) - 1)
    if unmatched:  # one encoder call for every text that needs embedding
        texts = sorted({t for i in unmatched for t in (answers[i], *choices[i])})
        vectors = dict(zip(texts, embed(texts), strict=True))
        for i in unmatched:
            sims = [float(vectors[c] @ vectors[answers[i]]) for c in choices[i]]
            out[i] = choices[i][int(np.argmax(sims))]
    return out  # type: ignore[return-value]


def answer_questions(
    targets: Sequence[tuple[int | str, str, str]],
    examples_for: Callable[[int], list[list[Example]]],
    settings: PicaSettings,
    generate: Callable[[list[Request]], list[Response]],
) -> list[dict]:
    """targets: (question_id, context, question). Returns one record per question."""
    requests, owners = [], []
    for i, (_, context, question) in enumerate(targets):
        for group in examples_for(i):
            requests.append(pica_request(build_prompt(group, context, question), settings))
            owners.append(i)
    responses = generate(requests)
    raise_for_failures(responses, [f"question {targets[o][0]}" for o in owners], "PICa")
    grouped: dict[int, list[Response]] = {}
    for owner, resp in zip(owners, responses, strict=True):
        grouped.setdefault(owner, []).append(resp)
    out = []
    for i, (qid, _, _) in enumerate(targets):
        resps = grouped[i]
        answer, rule = choose(resps)
        out.append(
            {
                "question_id": qid,
                "answer": answer,
                "rule": rule,
                "candidates": [process_answer(r.text) for r in resps],
            }
        )
    return out
