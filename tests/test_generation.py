"""Generation backends through their real clients: transformers, OpenAI-compatible, vLLM."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.generation import Request, build_generator, image, text
from crossmodal.generation.tiny import build_tiny_llava, build_tiny_qwen2_vl
from crossmodal.generation.types import Message, image_media_type

SERVER = [sys.executable, str(REPO / "tests" / "helpers" / "openai_server.py")]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return str(build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    d = tmp_path_factory.mktemp("pics")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(d / "red.jpg")
    Image.new("RGBA", (40, 40), (0, 0, 255, 100)).save(d / "blue.png")
    return d


def describe_request(path, seed=1, prefill="The image shows", temperature=0.7):
    return Request(
        (
            Message("system", (text("You are an AI."),)),
            Message("user", (image(path), text("Describe the image in great detail."))),
        ),
        max_tokens=8,
        temperature=temperature,
        top_p=0.9,
        seed=seed,
        prefill=prefill,
    )


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_transformers_backend_loads_tiny_models_and_is_seeded(arch, tmp_path, pictures):
    builder = build_tiny_llava if arch == "llava" else build_tiny_qwen2_vl
    folder = builder(tmp_path / arch, seed=0)
    gen = build_generator({"backend": "transformers", "model": str(folder), "device": "cpu"})
    reqs = [describe_request(pictures / "red.jpg", seed=s) for s in (1, 1, 2)]
    two_images = Request(
        (
            Message(
                "user",
                (image(pictures / "red.jpg"), image(pictures / "blue.png"), text("Compare.")),
            ),
        ),
        max_tokens=4,
        seed=0,
    )
    a, b, c, d = gen.generate([*reqs, two_images])
    assert all(r.ok for r in (a, b, c, d)), [r.error for r in (a, b, c, d)]
    assert a.text.startswith("The image shows") and a.tokens_out == 8 and a.tokens_in > 0
    assert a.text == b.text  # same request, same seed: same text
    assert a.text != c.text  # another seed samples differently
    # batch composition does not matter: alone or in a batch, the same request answers the same
    assert gen.generate([reqs[0]])[0].text == a.text


def test_media_type_comes_from_bytes(pictures, tmp_path):
    assert image_media_type(str(pictures / "red.jpg")) == "image/jpeg"
    lying = tmp_path / "really_png.jpg"
    lying.write_bytes((pictures / "blue.png").read_bytes())
    assert image_media_type(str(lying)) == "image/png"


def test_openai_key_missing_fails_at_once(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CrossmodalError, match="OPENAI_API_KEY is not set"):
        build_generator({"backend": "openai", "model": "gpt-4o-mini"})


@pytest.mark.slow
def test_vllm_backend_starts_server_and_openai_client_matches_in_process(tiny_llava, pictures):
    """The vllm backend launches a server (here the test server), waits for health, talks
    OpenAI to it, and shuts it down; its answers equal the in-process backend's."""
    local = build_generator({"backend": "transformers", "model": tiny_llava, "device": "cpu"})
    reqs = [describe_request(pictures / "red.jpg", seed=s) for s in range(4)]
    expected = [r.text for r in local.generate(reqs)]
    gen = build_generator(
        {
            "backend": "vllm",
            "model": tiny_llava,
            "server_command": SERVER,
            "startup_timeout": 120,
            "max_in_flight": 4,
        }
    )
    assert gen.process is None  # started lazily, by the first generate() with requests
    try:
        got = gen.generate(reqs)
        proc = gen.process
        assert [r.text for r in got] == expected
        assert all(r.tokens_in > 0 for r in got)
        # the plain openai backend against the same server
        base_url = gen.client.client.base_url
        oa = build_generator(
            {
                "backend": "openai",
                "model": tiny_llava,
                "base_url": str(base_url),
                "vllm_extensions": True,
            }
        )
        assert [r.text for r in oa.generate(reqs)] == expected
    finally:
        gen.close()
    assert proc.poll() is not None  # the server is gone


def test_vllm_backend_reports_a_server_that_dies(tmp_path):
    gen = build_generator(
        {
            "backend": "vllm",
            "model": str(tmp_path / "nope"),
            "server_command": SERVER,
            "startup_timeout": 60,
        }
    )
    with pytest.raises(CrossmodalError, match="exited during start-up"):
        gen.generate([describe_request(tmp_path / "none.jpg")])


def test_api_keys_never_reach_outputs(tmp_path, monkeypatch):
    from crossmodal.recod.stage import rows_table  # noqa: F401 - stage imports cleanly
    from crossmodal.workflow import generator_spec

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    spec = generator_spec(
        {"vlms": {"m": {"backend": "openai", "model": "x", "api_key_env": "OPENAI_API_KEY"}}}, "m"
    )
    assert "sk-secret-value" not in repr(spec)
    assert os.environ["OPENAI_API_KEY"] == "sk-secret-value"


def test_batched_transformers_generation(tiny_llava, pictures):
    """batch_size > 1 answers every request (prefill kept) in fewer generate() calls."""
    gen = build_generator(
        {"backend": "transformers", "model": tiny_llava, "device": "cpu", "batch_size": 4}
    )
    calls = []
    original = gen.hf_model.generate

    def counting(**kw):
        calls.append(kw["input_ids"].shape[0])
        return original(**kw)

    gen.hf_model.generate = counting
    reqs = [describe_request(pictures / "red.jpg", seed=s) for s in range(6)]
    reqs.append(describe_request(pictures / "blue.png", seed=0, temperature=0.0))
    out = gen.generate(reqs)
    assert all(r.ok and r.text.startswith("The image shows") for r in out)
    assert sorted(calls) == [1, 2, 4]  # 6 alike -> 4 + 2; the greedy one alone
    assert all(r.tokens_out == 8 for r in out[:6])
    # greedy decoding does not depend on batch mates
    exact = build_generator({"backend": "transformers", "model": tiny_llava, "device": "cpu"})
    assert exact.generate([reqs[-1]])[0].text == out[-1].text
