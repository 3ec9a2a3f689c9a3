"""ReCoD: retrieval equals brute force; the loop builds the reference prompts; clean-up."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.jobs import describe_settings

from crossmodal.encoders import build_encoder
from crossmodal.generation import Response
from crossmodal.index import IndexParams, build_index
from crossmodal.recod import prompts
from crossmodal.recod.cleanup import keep_sentences, split_sentences, strip_opening
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


def test_cleanup():
    assert strip_opening("The first image shows a dog. It runs") == "A dog. It runs"
    assert strip_opening("In the image, two cats sleep") == "Two cats sleep"
    assert strip_opening("A plain sentence") == "A plain sentence"
    assert split_sentences("One. Two three.  . Four") == ["One", "Two three", "Four"]
    assert keep_sentences("Short one. This sentence has six words here", 5) == [
        "This sentence has six words here"
    ]


class ScriptedVLM:
    """A deterministic stand-in VLM: answers from the request content, records requests."""

    def __init__(self):
        self.batches = []

    def __call__(self, requests):
        self.batches.append(requests)
        out = []
        for r in requests:
            user = r.messages[-1]
            n_img = sum(p.kind == "image" for p in user.parts)
            out.append(
                Response(
                    f"{r.prefill} detail {r.seed % 97} of {n_img} image(s). "
                    f"Second sentence about seed {r.seed % 13}"
                )
            )
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


def test_text_loop_prompts_exclusion_and_appending():
    vlm, ret = ScriptedVLM(), fixed_retriever([7, 8, 9])
    s = DescribeSettings.from_dict(describe_settings("recod", n_descriptions=3))
    rows = describe_recod(s, TARGETS, vlm, ret, CAPTIONS, PATHS)
    assert [len(b) for b in vlm.batches] == [2, 2, 2]  # one batch per loop, all targets
    base = vlm.batches[0][0]
    assert base.messages[0].parts[0].value == prompts.LLAVA_SYSTEM
    assert base.messages[1].parts[1].value == prompts.BASE_PROMPT
    assert base.prefill == "The image shows" and (base.temperature, base.top_p) == (0.2, 0.7)
    loop1 = vlm.batches[1][0]
    prompt = loop1.messages[1].parts[1].value
    refs = prompt.split('"""')[1].strip("\n").split("\n")
    assert len(refs) == 2 and all(r.startswith("cap7-") for r in refs)
    assert prompt.startswith('Reference descriptions:\n"""\n')
    # retrieval excludes the target and everything retrieved before for that target
    assert ret.calls[0][1] == [[1], [2]] and ret.calls[1][1] == [[1, 7], [2, 7]]
    # the retrieval query grows with the appended sentences
    assert len(ret.calls[1][0][0]) == len(ret.calls[0][0][0]) + 2
    by = {(r.image_id, r.loop): r for r in rows}
    assert by[(1, 1)].retrieved_id == 7 and by[(1, 2)].retrieved_id == 8
    assert by[(1, 1)].reference == refs
    assert not by[(1, 1)].text.startswith("The image shows")  # boilerplate stripped
    assert [(r.image_id, r.loop) for r in rows] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_references_redrawn_each_call_unless_reference_bug_switch():
    def refs_of(settings):
        vlm = ScriptedVLM()
        describe_recod(
            settings,
            TARGETS[:1],
            vlm,
            fixed_retriever([7, 7, 7, 7, 8, 9]),
            {7: CAPTIONS[7], 8: CAPTIONS[7], 9: CAPTIONS[7]},
            PATHS,
        )
        return [b[0].messages[1].parts[1].value for b in vlm.batches[1:]]

    fresh = refs_of(DescribeSettings.from_dict(describe_settings("recod", n_descriptions=3)))
    buggy = refs_of(
        DescribeSettings.from_dict(
            describe_settings("recod", n_descriptions=3, reuse_first_references=True)
        )
    )
    assert fresh[0] != fresh[1]  # drawn afresh (seeded) on every call
    assert buggy[0] == buggy[1]  # the reference Claude loop's reuse, when asked for


def test_image_loop_target_first_and_claude_labels():
    vlm = ScriptedVLM()
    s = DescribeSettings.from_dict(
        describe_settings(
            "recod_img",
            vlm={"image_labels": True, "min_sentence_words": 5, "system_prompt": None},
            n_descriptions=2,
        )
    )
    rows = describe_recod(s, TARGETS, vlm, fixed_retriever([9]), CAPTIONS, PATHS)
    parts = vlm.batches[1][0].messages[0].parts
    assert [p.value for p in parts[:4]] == ["Image 1:", "/t/1.jpg", "Image 2:", "/r/9.jpg"]
    assert parts[4].value == prompts.IMAGE_REFERENCE_PROMPT
    assert vlm.batches[1][0].prefill == "The first image shows"
    loop1 = [r for r in rows if r.loop == 1][0]
    assert loop1.reference == ["/r/9.jpg"]
    # the >= 5 words filter dropped "Second sentence about seed N" (5 words) ... and kept it
    assert all(len(s.split()) >= 5 for s in loop1.text.split(". "))


def test_base_method_draws_uniform_sampling_per_sample():
    vlm = ScriptedVLM()
    rows = describe_base(
        DescribeSettings.from_dict(describe_settings("base", n_descriptions=4)), TARGETS, vlm
    )
    reqs = vlm.batches[0]
    assert len(reqs) == 8 and len(rows) == 8
    temps = {r.temperature for r in reqs}
    assert len(temps) == 8 and all(0 <= t < 1 for t in temps)
    assert all(0 <= r.top_p < 1 for r in reqs)
    again = ScriptedVLM()
    describe_base(
        DescribeSettings.from_dict(describe_settings("base", n_descriptions=4)), TARGETS, again
    )
    assert again.batches[0] == reqs  # seeded: the same requests again
