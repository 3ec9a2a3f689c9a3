"""The generation workload that tests/test_vllm_real.py runs through vLLM and transformers.

The same stage code for both backends: base, ReCoD (text references) and ReCoD-img (image
references) descriptions through ``crossmodal.recod.loop``, and PICa prompts through
``crossmodal.vqa.pica`` (completion endpoint, log-probabilities). Every request is greedy:
seeded sampling is reproducible within a backend, but two implementations draw different
random numbers, so only greedy outputs can be compared across backends.

Run as a script it uses the vllm backend, writes the results as JSON, prints the server's
process id, and then waits to be killed (the test kills it to check that its vLLM server
dies with it):

    python vllm_parity.py WORKDIR ARCH VLLM_PYTHON OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from crossmodal.generation import build_generator
from crossmodal.generation.types import Request, Response
from crossmodal.recod.loop import DescribeSettings, describe_base, describe_recod
from crossmodal.vqa.pica import Example, PicaSettings, build_prompt, pica_request

N_TARGETS = 3
N_POOL = 4
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 210), (230, 200, 40), (120, 40, 160)]


def make_world(root: Path) -> dict[str, Any]:
    """Target and retrieval-pool pictures (distinct colours and shapes) and pool captions."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in range(N_TARGETS + N_POOL):
        img = Image.new("RGB", (96 + 16 * i, 72), COLOURS[i % len(COLOURS)])
        draw = ImageDraw.Draw(img)
        draw.ellipse((8 + 4 * i, 8, 40 + 6 * i, 48), fill=COLOURS[(i + 2) % len(COLOURS)])
        draw.rectangle((50, 20 + 3 * i, 90, 60), fill=(255, 255, 255))
        suffix = ".png" if i % 2 else ".jpg"
        paths[i] = str(root / f"img{i}{suffix}")
        img.save(paths[i])
    pool = range(N_TARGETS, N_TARGETS + N_POOL)
    return {
        "targets": [(i, paths[i]) for i in range(N_TARGETS)],
        "reference_paths": {i: paths[i] for i in pool},
        "captions": {
            i: [f"A picture of shape {i}.", f"Colours {i} and white.", f"Scene {i}."] for i in pool
        },
        "pool": list(pool),
    }


SETTINGS = {
    "n_descriptions": 3,
    "max_tokens": 12,
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": -1,
    "repetition_penalty": 1.0,
    "seed": 0,
    "system_prompt": (
        "You are an artificial intelligence assistant. The assistant identifies distinct "
        "visual features of images that differentiate it from reference desctiptions."
    ),
    "base_prompt": "Describe the image in great detail.",
    "prefill": "The image shows",
    "compare_prefill": "The first image shows",
    "image_labels": False,
    "min_sentence_words": 0,
    "cleanup": True,
    "pad_to_square": False,
    "n_reference_captions": 2,
    "reuse_first_references": False,
}


def settings(method: str) -> DescribeSettings:
    """The LLaVA reference settings (greedy); only the fields this version of the stage has."""
    names = {f.name for f in dataclasses.fields(DescribeSettings)}
    return DescribeSettings(method=method, **{k: v for k, v in SETTINGS.items() if k in names})


def greedy(generate):
    """``base`` draws temperature and top_p per sample; compare its greedy version."""

    def run(requests: list[Request]) -> list[Response]:
        return generate([dataclasses.replace(r, temperature=0.0, top_p=1.0) for r in requests])

    return run


def describe_all(generate, world: dict[str, Any]) -> dict[str, list[dict]]:
    pool = world["pool"]

    def retrieve(sentences, exclude):
        """The first pool image not yet used (retrieval itself is tested elsewhere)."""
        best = [next(p for p in pool if p not in ex) for ex in exclude]
        return best, [float(len(s)) for s in sentences]

    out = {"base": describe_base(settings("base"), world["targets"], greedy(generate))}
    first = {r.image_id: r.text for r in out["base"] if r.loop == 0}
    for method in ("recod", "recod_img"):
        out[method] = describe_recod(
            settings(method),
            world["targets"],
            generate,
            retrieve,
            world["captions"],
            world["reference_paths"],
            first,
        )
    return {m: [dataclasses.asdict(r) for r in rows] for m, rows in out.items()}


def pica_requests() -> list[Request]:
    s = PicaSettings(n_shot=2, n_ensemble=1, max_tokens=5, join=" ")
    examples = [
        Example("The image shows a red circle.", "What colour is the circle?", "red"),
        Example("A yellow square on white.", "What shape is it?", "square"),
        Example("Two shapes side by side.", "How many shapes are there?", "two"),
    ]
    questions = [
        ("The image shows a green triangle and a blue square.", "What colour is the triangle?"),
        ("A white background with three shapes.", "How many shapes are in the picture?"),
        ("The first image shows a banana and an apple.", "What fruit is yellow?"),
        ("Reference descriptions: a picture of a square.", "Which shape is in the middle?"),
        ("", "What is in the picture?"),
    ]
    return [
        pica_request(build_prompt(examples[k % 2 : k % 2 + 2], context, question), s)
        for k, (context, question) in enumerate(questions)
    ]


def answers(responses: list[Response]) -> list[dict]:
    return [
        {"text": r.text, "logprobs": r.logprobs, "tokens_in": r.tokens_in, "error": r.error}
        for r in responses
    ]


def sampled_twice(generate, world: dict[str, Any]) -> list[str]:
    """One seeded sampled request sent twice: a backend must answer it the same way."""
    from crossmodal.recod.loop import base_request

    image_id, path = world["targets"][0]
    req = base_request(settings("base"), path, image_id, 0, 0.9, 0.9)
    return [r.text for r in generate([req, req])]


def run(generate, world: dict[str, Any]) -> dict[str, Any]:
    return {
        "describe": describe_all(generate, world),
        "pica": answers(generate(pica_requests())),
        "sampled_twice": sampled_twice(generate, world),
    }


def vllm_spec(model: str, python: str) -> dict[str, Any]:
    return {
        "backend": "vllm",
        "model": model,
        "server_command": [python, "-m", "vllm.entrypoints.openai.api_server"],
        "gpus": 0,
        "dtype": "auto",
        # compiling the model graph costs a tiny model far more than it saves
        "server_args": ["--enforce-eager"],
        "startup_timeout": 600,
        "max_in_flight": 8,
    }


def main() -> None:
    workdir, arch, python, out = sys.argv[1:5]
    world = make_world(Path(workdir) / "pictures")
    gen = build_generator(vllm_spec(str(Path(workdir) / arch), python))
    began = time.monotonic()
    first = gen.generate(pica_requests()[:1])  # starts the server
    started = time.monotonic() - began
    assert first[0].ok, first[0].error
    began = time.monotonic()
    result = run(gen.generate, world)
    result["timing"] = {"server_start_s": started, "requests_s": time.monotonic() - began}
    result["server_pid"] = gen.process.pid
    Path(out).write_text(json.dumps(result))
    print(gen.process.pid, flush=True)
    time.sleep(3600)  # until the test kills this job


if __name__ == "__main__":
    main()
