"""ReCoD: retrieval equals brute force; the loop builds the reference prompts; clean-up."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.jobs import describe_settings

from crossmodal.encoders import build_encoder
from crossmodal.errors import CrossmodalError
from crossmodal.generation import Response
from crossmodal.index import IndexParams, build_index
from crossmodal.recod import prompts
from crossmodal.recod.cleanup import clean, keep_sentences, phrases_for, split_sentences
from crossmodal.recod.loop import DescribeSettings, describe_base, describe_recod
from crossmodal.recod.retrieval import retrieve


@pytest.fixture(scope="module")
def tiny():
    return build_encoder({"backend": "tiny", "seed": 0}, device="cpu")


def test_retrieval_equals_brute_force_mean_of_sentence_scores(tiny):
    rng = np.random.default_rng(0)
    imgs = rng.standard_normal((300, tiny.dim)).astype(np.float32)
    imgs /= np.linalg.norm(imgs, axis=1, keepdims=True)
    ids = np.arange(300, dtype=np.int64) + 1000
    index = build_index(imgs, ids, IndexParams("flat"))
    descriptions = [
        ["a red circle", "two shapes on a white background", "a triangle on the left"],
        ["one yellow square"],
        ["blue", "green", "purple shapes", "a picture"],
    ]
    got_ids, got_scores = retrieve(tiny, index, descriptions, exclude=[[], [1005], []])
    # brute force as the reference scores: every image, mean over sentences of similarity
    for t, sentences in enumerate(descriptions):
        s = tiny.encode_texts(sentences)  # normalised sentence embeddings
        scores = (s @ imgs.T).mean(axis=0)
        order = [i for i in np.argsort(-scores) if not (t == 1 and ids[i] == 1005)]
        assert got_ids[t] == ids[order[0]]
        assert got_scores[t] == pytest.approx(scores[order[0]], abs=1e-5)
    # and excluding the winner yields the runner-up
    again, _ = retrieve(tiny, index, descriptions[:1], exclude=[[int(got_ids[0])]])
    s = tiny.encode_texts(descriptions[0])
    assert again[0] == ids[np.argsort(-(s @ imgs.T).mean(axis=0))[1]]


def test_cleanup_follows_the_reference_rules():
    """caption_processing in gyjung975/ReCoD: every listed phrase, anywhere, case-sensitive,
    strip after each removal, nothing capitalised."""
    assert clean("The image shows a dog. It runs") == "a dog. It runs"
    # a phrase in mid-sentence goes too, leaving the reference's double space
    assert clean("A cat sits. In the image, a dog runs") == "A cat sits.  a dog runs"
    # case-sensitive: a lower-case phrase stays
    assert clean("the image shows a dog") == "the image shows a dog"
    # several phrases, in the reference's order: "The image is" before "This image shows"
    assert clean("This image shows what The image is about") == "what  about"
    # the "first image" variants only for image-based ReCoD
    text = "The first image shows a bench"
    assert clean(text, phrases_for("recod")) == text  # "The image shows" is not in it
    assert clean(text, phrases_for("recod_img")) == "a bench"
    assert split_sentences("One. Two three.  . Four") == ["One", "Two three", " ", "Four"]
    assert keep_sentences("Short one. This sentence has six words here", 5) == [
        "This sentence has six words here"
    ]


class ScriptedVLM:
    """A deterministic stand-in VLM: answers from the request content, records requests."""

    def __init__(self, answer=None):
        self.batches = []
        self.answer = answer or (
            lambda r, n_img: (
                f"The image shows detail {r.seed % 97} of {n_img} image(s). "
                f"Second sentence about seed {r.seed % 13}"
            )
        )

    def __call__(self, requests):
        self.batches.append(requests)
        out = []
        for r in requests:
            user = r.messages[-1]
            n_img = sum(p.kind == "image" for p in user.parts)
            out.append(Response.from_continuation(r, self.answer(r, n_img)))
        return out


def fixed_retriever(order):
    """Retrieve the first id of ``order`` not excluded, with a score; records calls."""
    calls = []

    def retrieve_(descs, exclude):
        calls.append((descs, exclude))
        best = [next(i for i in order if i not in ex) for ex in exclude]
        return best, [0.5] * len(best)

    retrieve_.calls = calls
    return retrieve_


CAPTIONS = {
    7: [f"cap7-{i}" for i in range(5)],
    8: [f"cap8-{i}" for i in range(5)],
    9: [f"cap9-{i}" for i in range(5)],
}
PATHS = {7: "/r/7.jpg", 8: "/r/8.jpg", 9: "/r/9.jpg"}
TARGETS = [(1, "/t/1.jpg"), (2, "/t/2.jpg")]


FIRST = {1: "a red circle. a blue square", 2: "a green triangle"}


def settings(method, vlm=None, **describe):
    return DescribeSettings.from_dict(describe_settings(method, vlm=vlm, **describe))


def test_text_loop_prompts_exclusion_and_appending():
    vlm, ret = ScriptedVLM(), fixed_retriever([7, 8, 9])
    s = settings("recod", n_descriptions=3)
    rows = describe_recod(s, TARGETS, vlm, ret, CAPTIONS, PATHS, FIRST)
    assert [len(b) for b in vlm.batches] == [2, 2]  # one batch per loop, all targets
    loop1 = vlm.batches[0][0]
    assert loop1.messages[0].parts[0].value == s.system_prompt  # the demo's LLaVA prompt
    assert loop1.prefill is None  # LLaVA: the prompt ends at the assistant turn
    assert (loop1.temperature, loop1.top_p, loop1.top_k) == (0.2, 0.7, None)
    prompt = loop1.messages[1].parts[1].value
    refs = prompt.split('"""')[1].strip("\n").split("\n")
    assert len(refs) == 2 and all(r.startswith("cap7-") for r in refs)
    assert prompt.startswith('Reference descriptions:\n"""\n')
    # retrieval excludes the target and everything retrieved before for that target
    assert ret.calls[0][1] == [[1], [2]] and ret.calls[1][1] == [[1, 7], [2, 7]]
    # the query starts from the base description and grows with each loop's sentences
    assert ret.calls[0][0][0] == ["a red circle", "a blue square"]
    assert len(ret.calls[1][0][0]) == 2 + 2
    by = {(r.image_id, r.loop): r for r in rows}
    assert by[(1, 0)].text == FIRST[1] and by[(2, 0)].text == FIRST[2]
    assert by[(1, 1)].retrieved_id == 7 and by[(1, 2)].retrieved_id == 8
    assert by[(1, 1)].reference == refs
    assert by[(1, 1)].text.startswith("detail ")  # "The image shows" cleaned away
    assert [(r.image_id, r.loop) for r in rows] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_reference_captions_come_from_the_first_five():
    many = {7: [f"cap7-{i}" for i in range(7)]}
    seen = set()
    for seed in range(40):
        vlm = ScriptedVLM()
        describe_recod(
            settings("recod", n_descriptions=2, seed=seed),
            TARGETS[:1],
            vlm,
            fixed_retriever([7]),
            many,
            PATHS,
            FIRST,
        )
        prompt = vlm.batches[0][0].messages[1].parts[1].value
        seen.update(prompt.split('"""')[1].strip("\n").split("\n"))
    assert seen == {f"cap7-{i}" for i in range(5)}


def test_references_redrawn_each_call_unless_reference_bug_switch():
    def refs_of(s):
        vlm = ScriptedVLM()
        describe_recod(
            s,
            TARGETS,
            vlm,
            fixed_retriever([7, 8, 9]),
            {7: CAPTIONS[7], 8: CAPTIONS[8], 9: CAPTIONS[9]},
            PATHS,
            FIRST,
        )
        return [[r.messages[1].parts[1].value for r in b] for b in vlm.batches]

    fresh = refs_of(settings("recod", n_descriptions=3))
    buggy = refs_of(settings("recod", n_descriptions=3, reuse_first_references=True))
    assert fresh[0][0] != fresh[1][0] and fresh[0][0] != fresh[0][1]  # afresh on every call
    # claude_recod.py's bug: the first pair drawn is reused for every image and loop
    assert {p for batch in buggy for p in batch} == {buggy[0][0]}


CLAUDE = {
    "image_labels": True,
    "min_sentence_words": 5,
    "system_prompt": None,
    "top_p": None,
    "prefill": "The image shows",
    "compare_prefill": "The first image shows",
    "cleanup": False,
    "base_prompt": "Describe the image in great detail.",
}


def test_image_loop_target_first_and_claude_layout():
    vlm = ScriptedVLM(lambda r, n: "two cats sleep. A dog chases a red ball there")
    s = settings("recod_img", vlm=CLAUDE, n_descriptions=2)
    ret = fixed_retriever([9, 8])
    rows = describe_recod(s, TARGETS, vlm, ret, CAPTIONS, PATHS, FIRST)
    req = vlm.batches[0][0]
    parts = req.messages[0].parts
    assert [p.value for p in parts[:4]] == ["Image 1:", "/t/1.jpg", "Image 2:", "/r/9.jpg"]
    assert parts[4].value == prompts.IMAGE_REFERENCE_PROMPT
    assert req.prefill == "The first image shows"
    assert req.sampling() == {"temperature": 0.2}  # Claude's scripts send temperature only
    loop1 = [r for r in rows if r.loop == 1][0]
    assert loop1.reference == ["/r/9.jpg"]
    # the stored text is the whole continuation, short sentence included, without the prefill
    assert loop1.text == "two cats sleep. A dog chases a red ball there"


def test_claude_retrieval_sees_only_sentences_of_five_words():
    vlm = ScriptedVLM(lambda r, n: "two cats sleep. A dog chases a red ball there")
    ret = fixed_retriever([7, 8, 9])
    describe_recod(
        settings("recod", vlm=CLAUDE, n_descriptions=3), TARGETS, vlm, ret, CAPTIONS, PATHS, FIRST
    )
    query_loop2 = ret.calls[1][0][0]
    assert query_loop2 == ["a red circle", "a blue square", "A dog chases a red ball there"]


def test_base_then_recod_share_loop_zero_after_the_same_cleanup():
    """Scripted VLM through base, then ReCoD from the base table's first descriptions: the
    k=1 context is the same text for base, recod and recod_img."""
    vlm = ScriptedVLM(lambda r, n: "The image shows a red circle. In the image, a square")
    base = describe_base(settings("base", n_descriptions=2), TARGETS, vlm)
    first = {r.image_id: r.text for r in base if r.loop == 0}
    assert first[1] == "a red circle.  a square"  # both phrases removed, as the reference does
    for method in ("recod", "recod_img"):
        rows = describe_recod(
            settings(method, n_descriptions=2),
            TARGETS,
            vlm,
            fixed_retriever([7]),
            CAPTIONS,
            PATHS,
            first,
        )
        assert {r.image_id: r.text for r in rows if r.loop == 0} == first


def test_a_missing_base_description_names_the_image():
    with pytest.raises(CrossmodalError, match=r"no loop 0 for 1 target\(s\), e.g. \[2\]"):
        describe_recod(
            settings("recod", n_descriptions=2),
            TARGETS,
            ScriptedVLM(),
            fixed_retriever([7]),
            CAPTIONS,
            PATHS,
            {1: "x"},
        )


def test_base_method_draws_uniform_sampling_per_sample():
    vlm = ScriptedVLM()
    rows = describe_base(settings("base", n_descriptions=4), TARGETS, vlm)
    reqs = vlm.batches[0]
    assert len(reqs) == 8 and len(rows) == 8
    temps = {r.temperature for r in reqs}
    assert len(temps) == 8 and all(0 <= t < 1 for t in temps)
    assert all(0 <= r.top_p < 1 for r in reqs)
    assert reqs[0].messages[-1].parts[1].value == "Describe the image in great detail.\n"
    again = ScriptedVLM()
    describe_base(settings("base", n_descriptions=4), TARGETS, again)
    assert again.batches[0] == reqs  # seeded: the same requests again
    claude = ScriptedVLM()
    describe_base(settings("base", vlm=CLAUDE, n_descriptions=2), TARGETS, claude)
    assert all(set(r.sampling()) == {"temperature"} for r in claude.batches[0])
