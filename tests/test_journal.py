"""The request journal: answers belong to the generator and the images that produced them."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from crossmodal.codehash import code_digest, package_root
from crossmodal.errors import CrossmodalError
from crossmodal.generation import Request, Response, image, text
from crossmodal.generation.journal import (
    Journal,
    JournaledGenerator,
    generator_identity,
    request_key,
)
from crossmodal.generation.types import Message


class Counting:
    """A backend stand-in that answers from the request and counts what it is sent."""

    def __init__(self):
        self.sent: list[Request] = []

    def generate(self, requests):
        self.sent += requests
        return [Response(f"answer {len(self.sent)}") for _ in requests]

    def close(self):
        pass


def journaled(spec, folder, backend):
    gen = JournaledGenerator(spec, folder, own="j.jsonl", chunk=8)
    gen._generator = backend  # the journal layer under test; the backend is a counter
    return gen


def describe(path) -> Request:
    return Request((Message("user", (image(path), text("Describe."))),), max_tokens=4, seed=1)


SPEC = {"backend": "transformers", "model": "org/model", "revision": "abc", "dtype": "auto"}


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.new("RGB", (8, 8), (200, 0, 0)).save(path)
    return path


def test_rerun_of_the_same_generator_sends_nothing(tmp_path, picture):
    first = Counting()
    with journaled(SPEC, tmp_path / "j", first) as gen:
        a = gen([describe(picture)])
    again = Counting()
    with journaled(SPEC, tmp_path / "j", again) as gen:
        b = gen([describe(picture)])
        stats = gen.stats()
    assert [r.text for r in a] == [r.text for r in b] and not again.sent
    assert (stats["sent"], stats["answered_from_journal"]) == (0, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "org/model-v2"},  # another model under the same config name
        {"revision": "def"},
        {"dtype": "float16"},
        {"batch_size": 4},
        {"backend": "vllm", "server_args": ["--max-model-len", "4096"]},
    ],
)
def test_another_generator_replays_nothing(tmp_path, picture, change):
    with journaled(SPEC, tmp_path / "j", Counting()) as gen:
        gen([describe(picture)])
    other = Counting()
    with journaled({**SPEC, **change}, tmp_path / "j", other) as gen:
        gen([describe(picture)])
        assert gen.stats()["sent"] == 1
    assert len(other.sent) == 1


def test_operational_settings_keep_the_answers(tmp_path, picture):
    """How requests travel (in flight, timeouts, the server's address) changes no answer."""
    with journaled(SPEC, tmp_path / "j", Counting()) as gen:
        gen([describe(picture)])
    quiet = Counting()
    moved = {**SPEC, "max_in_flight": 3, "timeout": 9, "backoff": 2.0, "max_retries": 1}
    with journaled(moved, tmp_path / "j", quiet) as gen:
        gen([describe(picture)])
    assert not quiet.sent


def test_a_replaced_image_is_described_again(tmp_path, picture):
    with journaled(SPEC, tmp_path / "j", Counting()) as gen:
        gen([describe(picture)])
    Image.new("RGB", (8, 8), (0, 0, 200)).save(picture)  # same name, other picture
    again = Counting()
    with journaled(SPEC, tmp_path / "j", again) as gen:
        gen([describe(picture)])
    assert len(again.sent) == 1


def test_images_are_keyed_by_content_not_path(tmp_path, picture):
    copy = tmp_path / "elsewhere" / "same.png"
    copy.parent.mkdir()
    shutil.copy(picture, copy)
    with journaled(SPEC, tmp_path / "j", Counting()) as gen:
        gen([describe(picture)])
    moved = Counting()
    with journaled(SPEC, tmp_path / "j", moved) as gen:
        gen([describe(copy)])
    assert not moved.sent


def test_a_rebuilt_local_model_folder_is_another_generator(tmp_path, picture):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    spec = {**SPEC, "model": str(folder)}
    with journaled(spec, tmp_path / "j", Counting()) as gen:
        gen([describe(picture)])
    (folder / "model.safetensors").write_bytes(b"\x01" * 64)  # new weights, same path
    rebuilt = Counting()
    with journaled(spec, tmp_path / "j", rebuilt) as gen:
        gen([describe(picture)])
    assert len(rebuilt.sent) == 1


def test_backend_code_is_part_of_the_identity(tmp_path):
    """Editing a backend's module (or one it imports) changes its code hash; editing another
    backend's does not."""
    src = tmp_path / "src"
    shutil.copytree(package_root() / "crossmodal", src / "crossmodal")
    module = "crossmodal.generation.transformers_backend"
    before = code_digest(src, module, whole=False)
    anthropic = src / "crossmodal/generation/anthropic_backend.py"
    anthropic.write_text(anthropic.read_text() + "\n# edit\n")
    assert code_digest(src, module, whole=False) == before
    types = src / "crossmodal/generation/types.py"
    types.write_text(types.read_text() + "\n# edit\n")
    assert code_digest(src, module, whole=False) != before
    assert generator_identity(SPEC)["code"] == code_digest(package_root(), module, whole=False)


def test_keys_differ_by_request_and_are_stable(picture):
    identity = "x" * 64
    digest = lambda p: "d"  # noqa: E731 - a fixed image digest isolates the request part
    a = request_key(describe(picture), identity, digest)
    assert a == request_key(describe(picture), identity, digest)
    other = Request(describe(picture).messages, max_tokens=5, seed=1)
    assert request_key(other, identity, digest) != a
    assert request_key(describe(picture), "y" * 64, digest) != a


def test_a_torn_last_line_is_ended_and_counted(tmp_path):
    folder = tmp_path / "j"
    journal = Journal(folder, "j.jsonl")
    journal.record("k1", Response("one"))
    with (folder / "j.jsonl").open("a") as fh:
        fh.write('{"key": "k2", "response": {"te')  # killed mid-write
    reopened = Journal(folder, "j.jsonl")
    assert reopened.torn_lines == 1 and set(reopened.done) == {"k1"}
    reopened.record("k3", Response("three"))
    lines = (folder / "j.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["key"] == "k3"  # a line of its own, readable
    final = Journal(folder, "j.jsonl")
    assert set(final.done) == {"k1", "k3"} and final.torn_lines == 1


def test_every_shard_reads_every_journal_of_its_stage(tmp_path, picture):
    """A new shard count reuses the answers journalled under the old one."""
    with JournaledGenerator(SPEC, tmp_path / "j", own="shard0of2.jsonl", chunk=8) as gen:
        gen._generator = Counting()
        gen([describe(picture)])
    single = Counting()
    with JournaledGenerator(SPEC, tmp_path / "j", own="shard0of1.jsonl", chunk=8) as gen:
        gen._generator = single
        gen([describe(picture)])
    assert not single.sent


def test_ledger_counts_empty_answers_and_journal_sources(tmp_path, picture):
    class Empty(Counting):
        def generate(self, requests):
            self.sent += requests
            return [Response.from_continuation(r, "", tokens_in=3, tokens_out=0) for r in requests]

    with journaled(SPEC, tmp_path / "j", Empty()) as gen:
        out = gen([describe(picture)])
        stats = gen.stats()
    assert out[0].ok and out[0].empty
    assert stats["empty_answers"] == 1 and stats["sent"] == 1
    assert stats["generator_identity"]["settings"]["model"] == "org/model"


def test_ledger_records_the_sampling_that_was_sent(tmp_path, picture):
    reqs = [
        Request(describe(picture).messages, max_tokens=4, temperature=t, top_p=0.7, seed=1)
        for t in (0.1, 0.6)
    ]
    with journaled(SPEC, tmp_path / "j", Counting()) as gen:
        gen(reqs)
        sent = gen.stats()["sampling_sent"]
    assert sent == {
        "max_tokens": {"requests": 2, "min": 4, "max": 4},
        "temperature": {"requests": 2, "min": 0.1, "max": 0.6},
        "top_p": {"requests": 2, "min": 0.7, "max": 0.7},
    }  # no top_k or repetition_penalty: they were not sent


def test_the_server_an_openai_entry_names_is_part_of_its_identity():
    """base_url of an OpenAI-compatible entry picks the weights; Anthropic's API is one API."""
    openai = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    moved = {**openai, "base_url": "http://127.0.0.1:2/v1"}
    assert generator_identity(openai) != generator_identity(moved)
    claude = {"backend": "anthropic", "model": "c", "base_url": None, "gpus": 0}
    proxied = {**claude, "base_url": "http://127.0.0.1:3", "gpus": 1, "backoff": 5.0}
    assert generator_identity(claude) == generator_identity(proxied)


def test_where_a_transformers_model_runs_is_part_of_its_identity(monkeypatch):
    """``device: auto`` means float16 on a GPU and float32 on the CPU: not the same answers."""
    import torch

    on_cpu = generator_identity({**SPEC, "device": "auto"})
    assert on_cpu["runs_on"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generator_identity({**SPEC, "device": "auto"})["runs_on"] == "cuda"


def test_a_record_this_version_cannot_read_is_an_error_not_a_redo(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        json.dumps({"key": "k", "response": {"text": "x", "novel_field": 1}}) + "\n"
    )
    with pytest.raises(CrossmodalError, match=r"a.jsonl:1: a journal record this version"):
        Journal(folder, "a.jsonl")
    (folder / "a.jsonl").write_text(json.dumps({"response": {"text": "x"}}) + "\n")
    with pytest.raises(CrossmodalError, match=r"a.jsonl:1: not a journal record"):
        Journal(folder, "a.jsonl")
