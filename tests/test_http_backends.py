"""The shared HTTP client loop, driven through the real openai and anthropic SDKs against a local
server that injects faults (tests/helpers/fault_server.py); backend capabilities and the
config check built on them."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from helpers.fault_server import FaultServer

from crossmodal.errors import CrossmodalError
from crossmodal.generation import Request, build_generator, capabilities, capability_problems
from crossmodal.generation import registry as registry_module
from crossmodal.generation.anthropic_backend import AnthropicGenerator
from crossmodal.generation.http_client import BackendRejected, HTTPGenerator, RetryPolicy
from crossmodal.generation.openai_backend import OpenAIGenerator
from crossmodal.generation.registry import Capabilities, CapabilityError
from crossmodal.generation.types import Message, raise_for_failures, text
from crossmodal.vqa.pica import choose

KEY = "sk-test-secret-456"
BACKENDS = ["openai", "anthropic"]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake = FaultServer()
    yield fake
    fake.close()


def spec(backend: str, server: FaultServer, **kw) -> dict:
    base_url = f"{server.url}/v1" if backend == "openai" else server.url
    return {
        "backend": backend,
        "model": "m-1",
        "base_url": base_url,
        "max_retries": 3,
        "timeout": 0.5,
        "backoff": 0.001,
        **kw,
    }


def ask(prompt: str, prefill: str | None = None, **kw) -> Request:
    return Request(
        (Message("system", (text("SYS"),)), Message("user", (text(prompt),))),
        max_tokens=20,
        prefill=prefill,
        **kw,
    )


FAULTS = ["plain", "429x2", "500x1", "503x2", "529x1", "SLOWx1"]
ATTEMPTS = [1, 3, 2, 3, 2, 2]  # one try, plus one retry per injected fault


@pytest.mark.parametrize("backend", BACKENDS)
def test_faults_are_retried_until_success(server, backend):
    gen = build_generator(spec(backend, server))
    out = gen.generate([ask(p) for p in FAULTS])
    assert all(r.ok for r in out), [r.error for r in out]
    assert [server.attempts[p] for p in FAULTS] == ATTEMPTS
    assert [r.text for r in out] == [f"answer to {p}" for p in FAULTS]
    assert out[0].tokens_in == 11


def test_both_backends_go_through_the_one_loop(server):
    """Same faults, same attempts and the same outcomes: one loop, two payload adapters."""
    assert OpenAIGenerator._one is AnthropicGenerator._one is HTTPGenerator._one
    prompts = ["429x1", "ALWAYS500", "ALWAYS400", "SLOWx9", "EMPTY"]
    outcomes = {}
    for backend in BACKENDS:
        server.attempts.clear()
        gen = build_generator(spec(backend, server, max_retries=2, timeout=0.3))
        assert gen.client.max_retries == 0  # the SDK's own retries are off
        out = gen.generate([ask(f"{backend} {p}") for p in prompts])
        outcomes[backend] = [
            (server.attempts[f"{backend} {p}"], r.ok, r.empty, (r.error or "").split(": ", 1)[-1])
            for p, r in zip(prompts, out, strict=True)
        ]
    assert outcomes["openai"] == outcomes["anthropic"]
    assert [a for a, *_ in outcomes["openai"]] == [2, 3, 1, 3, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_retries_are_bounded_then_the_failure_is_reported(server, backend):
    gen = build_generator(spec(backend, server, max_retries=2))
    (resp,) = gen.generate([ask("ALWAYS500")])
    assert server.attempts["ALWAYS500"] == 3  # one try + two retries, then give up
    assert not resp.ok and "HTTP 500" in resp.error and "after 3 attempts" in resp.error
    with pytest.raises(CrossmodalError, match="1 of 1 q requests failed"):
        raise_for_failures([resp], ["q"], "q")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_400_is_not_retried_and_says_why_without_the_key(server, backend):
    gen = build_generator(spec(backend, server))
    bad, good = gen.generate([ask("ALWAYS400"), ask("plain")])
    assert server.attempts["ALWAYS400"] == 1
    assert not bad.ok and "HTTP 400" in bad.error and "injected, key sent" in bad.error
    assert "not retried" in bad.error and KEY not in bad.error
    assert good.ok


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("code", "says"), [(401, "check the key in the environment variable"), (403, "may use")]
)
def test_key_rejections_stop_the_run_naming_the_variable_not_the_key(server, backend, code, says):
    gen = build_generator(spec(backend, server))
    env = "OPENAI_API_KEY" if backend == "openai" else "ANTHROPIC_API_KEY"
    with pytest.raises(BackendRejected, match=f"HTTP {code}") as err:
        gen.generate([ask(f"ALWAYS{code}")])
    assert says in str(err.value) and env in str(err.value) and KEY not in str(err.value)
    assert server.attempts[f"ALWAYS{code}"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_404_stops_the_run_naming_model_and_url(server, backend):
    gen = build_generator(spec(backend, server))
    with pytest.raises(BackendRejected, match="HTTP 404") as err:
        gen.generate([ask("ALWAYS404")])
    assert "'m-1'" in str(err.value) and server.url in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeouts_are_retried_then_reported(server, backend):
    gen = build_generator(spec(backend, server, max_retries=1, timeout=0.3))
    (resp,) = gen.generate([ask("SLOWx9")])
    assert server.attempts["SLOWx9"] == 2
    assert not resp.ok and "no answer within the 0.3s timeout" in resp.error


@pytest.mark.parametrize("backend", BACKENDS)
def test_connection_errors_are_retried_then_reported(server, backend):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    gen = build_generator({**spec(backend, server, max_retries=2), "base_url": url})
    sends = []
    send = gen._send
    gen._send = lambda req: (sends.append(req), send(req))[1]
    (resp,) = gen.generate([ask("plain")])
    assert len(sends) == 3
    assert not resp.ok and f"could not reach {url}" in resp.error


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_in_flight_are_bounded(server, backend):
    gen = build_generator(spec(backend, server, max_in_flight=2))
    out = gen.generate([ask(f"WAIT {i}") for i in range(6)])
    assert all(r.ok for r in out)
    assert server.max_in_flight == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_answer_is_an_answer_counted_not_failed(server, backend):
    gen = build_generator(spec(backend, server, vllm_extensions=backend == "openai"))
    empty_prefilled, empty, full = gen.generate(
        [ask("EMPTY", prefill="The image shows "), ask("EMPTY 2"), ask("plain")]
    )
    assert server.attempts["EMPTY"] == 1 and server.attempts["EMPTY 2"] == 1  # not resent
    assert empty_prefilled.ok and empty_prefilled.empty
    assert empty_prefilled.text == "The image shows"  # the prefill alone
    assert empty.ok and empty.empty and empty.text == ""
    assert full.ok and not full.empty
    raise_for_failures([empty_prefilled, empty, full], ["a", "b", "c"], "x")  # nothing failed


def test_retry_policy_backs_off_exponentially_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(max_retries=5, backoff=1.0, backoff_max=10.0)
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0)]:
        waits = {policy.delay(retry) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1  # jittered
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=99.0) == 10.0  # capped


# -- capabilities -------------------------------------------------------------------------------


def test_capability_table():
    table = {
        b: capabilities({"backend": b}) for b in ("transformers", "vllm", "openai", "anthropic")
    }
    everything = Capabilities(True, True, True, True, True)
    assert table["transformers"] == table["vllm"] == everything
    assert table["openai"] == Capabilities(
        seed=True, logprobs=True, prefill=False, raw_completion=False, images=True
    )
    assert capabilities({"backend": "openai", "vllm_extensions": True}) == everything
    assert table["anthropic"] == Capabilities(
        seed=False, logprobs=False, prefill=True, raw_completion=False, images=True
    )
    with pytest.raises(CrossmodalError, match="'nope' unknown"):
        capabilities({"backend": "nope"})


def config(vlms: dict, llms: dict) -> dict:
    return {
        "vlms": vlms,
        "llms": llms,
        "describe": {"vlms": list(vlms)},
        "pica": {"llms": list(llms)},
    }


def test_a_prefill_the_backend_cannot_continue_is_a_config_error():
    errors, _ = capability_problems(
        config({"gpt": {"backend": "openai", "model": "gpt-4o", "prefill": "The image shows"}}, {})
    )
    assert errors == [
        "vlms.gpt.prefill: backend 'openai' cannot continue an assistant prefill; set "
        "vllm_extensions: true for a vLLM server or remove the prefill"
    ]


@pytest.mark.parametrize(
    "vlm",
    [
        {"backend": "openai", "model": "x", "prefill": "The image shows", "vllm_extensions": True},
        {"backend": "openai", "model": "x"},  # no prefill key: nothing to continue
        {"backend": "openai", "model": "x", "prefill": None},
        {"backend": "openai", "model": "x", "prefill": ""},
        {"backend": "vllm", "model": "x", "prefill": "The image shows"},
        {"backend": "transformers", "model": "x", "prefill": "The image shows"},
    ],
)
def test_describe_backends_that_can_do_what_is_asked_pass(vlm):
    assert capability_problems(config({"v": vlm}, {})) == ([], [])


def test_claude_describes_with_a_prefill_but_without_a_seed():
    claude = {"backend": "anthropic", "model": "claude", "prefill": "The image shows"}
    errors, notes = capability_problems(config({"claude": claude}, {}))
    assert errors == [] and len(notes) == 1
    assert notes[0].startswith("vlms.claude: backend 'anthropic' takes no seed")


def test_a_describe_backend_without_images_is_an_error(monkeypatch):
    blind = replace(registry_module.CAPABILITIES["vllm"], images=False)
    monkeypatch.setitem(registry_module.CAPABILITIES, "vllm", blind)
    errors, _ = capability_problems(config({"v": {"backend": "vllm", "model": "x"}}, {}))
    assert len(errors) == 1 and errors[0].startswith("vlms.v.backend: backend 'vllm' takes no")


def test_pica_fallbacks_are_notes_not_errors():
    llms = {
        "claude": {"backend": "anthropic", "model": "c"},
        "gpt": {"backend": "openai", "model": "g"},
        "served": {"backend": "openai", "model": "s", "vllm_extensions": True},
        "local": {"backend": "transformers", "model": "l"},
    }
    errors, notes = capability_problems(config({}, llms))
    assert errors == []
    assert [n.split(":")[0] for n in notes] == ["llms.claude", "llms.claude", "llms.gpt"]
    assert "majority vote" in notes[0] and "one user chat message" in notes[1]
    assert "one user chat message" in notes[2]


def test_a_stage_naming_an_unconfigured_model_is_an_error():
    cfg = config({}, {})
    cfg["describe"]["vlms"] = ["ghost"]
    cfg["pica"]["llms"] = ["phantom"]
    errors, _ = capability_problems(cfg)
    assert errors == [
        "describe.vlms: 'ghost' is not configured under vlms; add it there",
        "pica.llms: 'phantom' is not configured under llms; add it there",
    ]


# -- the capability code paths at run time ------------------------------------------------------


def test_plain_openai_refuses_a_prefill_before_sending_anything(server):
    gen = build_generator(spec("openai", server))
    with pytest.raises(CapabilityError, match="cannot continue an assistant prefill") as err:
        gen.generate([ask("plain"), ask("describe", prefill="The image shows")])
    assert "vllm_extensions: true" in str(err.value)
    assert server.requests == []


def test_vllm_extensions_continue_the_prefill(server):
    gen = build_generator(spec("openai", server, vllm_extensions=True))
    (resp,) = gen.generate([ask("describe", prefill="The image shows")])
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body["continue_final_message"] is True
    assert body["messages"][-1] == {"role": "assistant", "content": "The image shows"}
    assert resp.text == "The image shows answer to describe (prefilled)"


def pica_like(prompt: str) -> Request:
    return Request(
        (Message("user", (text(prompt),)),), max_tokens=5, logprobs=True, stop=("\n",), raw=True
    )


def test_raw_prompts_use_the_completion_endpoint_where_there_is_one(server):
    gen = build_generator(spec("openai", server, vllm_extensions=True))
    (resp,) = gen.generate([pica_like("Q: what?")])
    path, body = server.requests[-1]
    assert path == "/v1/completions" and body["prompt"] == "Q: what?"
    assert resp.text == " answer to Q: what?"  # as generated: PICa cleans it
    assert resp.logprobs == [-0.25] * 4  # the answer's 4 tokens, not those after the newline


def test_raw_prompts_fall_back_to_one_user_message(server):
    prompt = "Context: c\n===\nQ: what?\nA:"
    gen = build_generator(spec("openai", server))
    (resp,) = gen.generate([pica_like(prompt)])
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": prompt}]
    assert resp.ok and resp.logprobs and set(resp.logprobs) == {-0.5}  # chat ones come back


def test_without_logprobs_pica_falls_back_to_a_majority_vote(server):
    gen = build_generator(spec("anthropic", server))
    prompts = ["Q: one", "Q: two", "Q: one"]
    out = gen.generate([pica_like(p) for p in prompts])
    path, body = server.requests[-1]
    assert path == "/v1/messages" and [m["role"] for m in body["messages"]] == ["user"]
    assert all(r.ok and r.logprobs is None for r in out)
    assert choose(out) == ("answer q: one", "majority")
