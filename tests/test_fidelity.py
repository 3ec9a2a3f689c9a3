"""What reaches the model is what the reference sends: sampling fields, padded pixels."""

from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest
from conftest import REPO
from helpers.jobs import describe_settings
from PIL import Image

from crossmodal.generation import build_generator
from crossmodal.generation.transformers_backend import generate_sampling
from crossmodal.generation.types import PAD_COLOUR, image_payload, request_image
from crossmodal.recod.loop import DescribeSettings, base_request, text_reference_request

CANNED = [sys.executable, str(REPO / "tests" / "helpers" / "canned_server.py")]


@pytest.fixture
def photo(tmp_path):
    """A 640x480 picture, COCO's usual shape, in one flat colour."""
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (10, 200, 30)).save(path, quality=95)
    return path


def test_a_landscape_image_is_padded_to_a_square_with_mean_colour_bands(photo):
    padded = request_image(str(photo), pad=True)
    assert padded.size == (640, 640)
    pixels = np.asarray(padded)
    assert PAD_COLOUR == (122, 116, 104)
    assert (pixels[:80] == PAD_COLOUR).all() and (pixels[-80:] == PAD_COLOUR).all()  # bands
    middle = pixels[80:560].reshape(-1, 3).mean(axis=0)
    assert np.allclose(middle, (10, 200, 30), atol=3)  # the picture itself, centred
    assert request_image(str(photo), pad=False).size == (640, 480)


def test_the_pixels_sent_over_http_are_the_padded_ones(photo):
    media_type, data = image_payload(str(photo), pad=True)
    sent = Image.open(io.BytesIO(base64.b64decode(data)))
    assert media_type == "image/png" and sent.size == (640, 640)
    assert np.array_equal(np.asarray(sent), np.asarray(request_image(str(photo), pad=True)))
    plain_type, plain = image_payload(str(photo), pad=False)
    assert plain_type == "image/jpeg" and base64.b64decode(plain) == photo.read_bytes()


def _served(tmp_path, monkeypatch, requests):
    argv, bodies = tmp_path / "argv.jsonl", tmp_path / "bodies.jsonl"
    monkeypatch.setenv("CANNED_SERVER_ARGV", str(argv))
    monkeypatch.setenv("CANNED_SERVER_BODIES", str(bodies))
    gen = build_generator({"backend": "vllm", "model": "tiny", "server_command": CANNED, "gpus": 0})
    try:
        assert all(r.ok for r in gen.generate(requests))
    finally:
        gen.close()
    lines = bodies.read_text().splitlines()
    return json.loads(argv.read_text().splitlines()[0]), [json.loads(b) for b in lines]


def test_the_vllm_server_gets_exactly_the_configured_sampling(tmp_path, monkeypatch, photo):
    llava = DescribeSettings.from_dict(describe_settings("recod", vlm={"pad_to_square": True}))
    tuned = DescribeSettings.from_dict(
        describe_settings("recod", vlm={"top_k": 20, "repetition_penalty": 1.05})
    )
    claude_like = DescribeSettings.from_dict(describe_settings("recod", vlm={"top_p": None}))
    requests = [
        text_reference_request(llava, str(photo), 1, 1, ["a cat", "a dog"]),
        text_reference_request(tuned, str(photo), 1, 1, ["a cat", "a dog"]),
        base_request(claude_like, str(photo), 1, 0, 0.5, None),
    ]
    argv, bodies = _served(tmp_path, monkeypatch, requests)
    assert argv[argv.index("--generation-config") + 1] == "vllm"
    sampling = ("temperature", "top_p", "top_k", "repetition_penalty")
    sent = sorted(
        (({k: b[k] for k in sampling if k in b}, i) for i, b in enumerate(bodies)), key=str
    )
    assert [s for s, _ in sent] == sorted(
        [
            {"temperature": 0.2, "top_p": 0.7},  # off switches are not sent
            {"temperature": 0.2, "top_p": 0.7, "top_k": 20, "repetition_penalty": 1.05},
            {"temperature": 0.5},  # top_p null: not sent
        ],
        key=str,
    )
    padded = next(i for s, i in sent if s == {"temperature": 0.2, "top_p": 0.7})
    url = bodies[padded]["messages"][-1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")  # the padded square
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (640, 640)


def test_transformers_samples_with_exactly_the_configured_fields():
    llava = DescribeSettings.from_dict(describe_settings("recod"))
    req = text_reference_request(llava, "/x.jpg", 1, 1, ["a"])
    # generate() would otherwise add the model's defaults (top_k=50): off means off
    assert generate_sampling(req) == {
        "do_sample": True,
        "temperature": 0.2,
        "top_p": 0.7,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }
    greedy = base_request(llava, "/x.jpg", 1, 0, 0.0, None)
    assert generate_sampling(greedy) == {"do_sample": False, "repetition_penalty": 1.0}
