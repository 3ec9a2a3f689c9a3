"""itr-eval against a brute-force ranking and the reference's itm_eval, ties included."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from crossmodal.cli import main
from crossmodal.cusa import itr_eval
from crossmodal.errors import DataFormatError

CAPTIONS = 5


# --- independent definitions ------------------------------------------------------------------


def brute_rank(scores_row: list[float], target: int) -> int:
    """Position of ``target`` when candidates are ordered by score, then by index, both
    descending (a stable ascending sort, reversed)."""
    order = sorted(range(len(scores_row)), key=lambda j: (scores_row[j], j), reverse=True)
    return order.index(target)


def brute_metrics(scores: np.ndarray, img_ids: list, txt_img: list) -> dict[str, float]:
    rows = [img_ids.index(i) for i in txt_img]
    i2t = [
        min(brute_rank(list(scores[r]), t) for t in range(len(txt_img)) if rows[t] == r)
        for r in range(len(img_ids))
    ]
    t2i = [brute_rank(list(scores[:, t]), rows[t]) for t in range(len(txt_img))]
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    out["rsum"] = sum(out.values())
    return out


def reference_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt, kind=None):
    """evaluation.py:58-104 of lerogo/aaai24_itr_cusa, transcribed; ``kind`` is passed to
    np.argsort (None = the reference's default)."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score, kind=kind)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    tr1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    tr5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    tr10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score, kind=kind)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    ir5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    ir10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    tr_mean = (tr1 + tr5 + tr10) / 3
    ir_mean = (ir1 + ir5 + ir10) / 3
    r_mean = (tr_mean + ir_mean) / 2
    return {
        "txt_r1": round(tr1, 2),
        "txt_r5": round(tr5, 2),
        "txt_r10": round(tr10, 2),
        "img_r1": round(ir1, 2),
        "img_r5": round(ir5, 2),
        "img_r10": round(ir10, 2),
        "r_mean": round(r_mean, 2),
    }


def reference_layout(scores, img_ids, txt_img):
    """The reference's txt2img / img2txt (dataset/cross_coco_dataset.py:98-108) for our ids."""
    row = {i: r for r, i in enumerate(img_ids)}
    txt2img = {t: row[i] for t, i in enumerate(txt_img)}
    img2txt = {r: [t for t, i in enumerate(txt_img) if row[i] == r] for r in range(len(img_ids))}
    return scores, scores.T, txt2img, img2txt


# --- data -------------------------------------------------------------------------------------


def world(seed: int, n_images: int = 24, signal: float = 1.0, decimals: int | None = None):
    """Images with 5 captions each, texts shuffled, rows in a shuffled id order; scores are
    noise plus ``signal`` on the true pairs, optionally rounded to force many ties."""
    rng = np.random.default_rng(seed)
    img_ids = [f"img{i:03d}" for i in rng.permutation(n_images)]
    txt_img = [i for i in img_ids for _ in range(CAPTIONS)]
    txt_img = [txt_img[j] for j in rng.permutation(len(txt_img))]
    rows = np.array([img_ids.index(i) for i in txt_img])
    scores = rng.normal(size=(n_images, len(txt_img)))
    scores[rows, np.arange(len(txt_img))] += signal
    if decimals is not None:
        scores = np.round(scores, decimals)
    return scores.astype(np.float32), img_ids, txt_img


def assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(itr_eval.KEYS) and a == b  # exact: same arithmetic, same ranks


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_without_ties(seed):
    scores, img_ids, txt_img = world(seed, signal=1.5)
    assert len(np.unique(scores)) == scores.size
    result = itr_eval.evaluate(scores, img_ids, txt_img)
    assert_same(result, brute_metrics(scores, img_ids, txt_img))
    assert 0 < result["i2t_r1"] < 100 and 0 < result["t2i_r1"] < 100  # not a trivial case


@pytest.mark.parametrize(("seed", "decimals"), [(3, 1), (4, 0)])
def test_matches_brute_force_with_many_ties(seed, decimals):
    scores, img_ids, txt_img = world(seed, signal=0.8, decimals=decimals)
    rows = itr_eval.text_rows(scores, img_ids, txt_img)
    r = itr_eval.ranks(scores, rows)
    assert r.tied_i2t > 0 and r.tied_t2i > 0  # the data really has tied ground truths
    expected = brute_metrics(scores, img_ids, txt_img)
    assert_same(itr_eval.evaluate(scores, img_ids, txt_img), expected)


def test_a_tie_ranks_the_later_candidate_first():
    """Row 0 owns texts 0 and 3 and row 1 texts 1 and 2. Image 0's best caption (column 0,
    0.9) ties with column 2 (image 1's): the later column wins, so image 0 is at rank 1.
    Image 1's caption in column 2 ties with column 0, which comes earlier: rank 0."""
    scores = np.array([[0.9, 0.1, 0.9, 0.2], [0.3, 0.1, 0.3, 0.0]], dtype=np.float32)
    img_ids, txt_img = ["a", "b"], ["a", "b", "b", "a"]
    r = itr_eval.ranks(scores, itr_eval.text_rows(scores, img_ids, txt_img))
    assert r.i2t.tolist() == [1, 0]
    # text 0: column [0.9, 0.3], its image (row 0) first; text 2: [0.9, 0.3], row 1 second;
    # text 1: [0.1, 0.1] tie, its image is the later row: first; text 3: [0.2, 0.0]: first
    assert r.t2i.tolist() == [0, 0, 1, 0]
    m = itr_eval.recalls(r)
    assert m["i2t_r1"] == 50.0 and m["t2i_r1"] == 75.0 and m["i2t_r5"] == 100.0
    assert m["rsum"] == 50.0 + 100.0 + 100.0 + 75.0 + 100.0 + 100.0
    # ties that could change a rank are counted: text 0 and 2 in their rows, text 1's column
    assert (r.tied_i2t, r.tied_t2i) == (2, 1)


def test_a_tie_between_two_captions_of_one_image_is_harmless_and_not_counted():
    scores = np.array([[0.5, 0.5, 0.1], [0.0, 0.1, 0.9]])
    r = itr_eval.ranks(scores, itr_eval.text_rows(scores, ["a", "b"], ["a", "a", "b"]))
    assert r.i2t.tolist() == [0, 0] and r.t2i.tolist() == [0, 0, 0]
    assert (r.tied_i2t, r.tied_t2i) == (0, 0)


def test_agrees_with_the_reference_itm_eval():
    scores, img_ids, txt_img = world(5, n_images=30, signal=1.2)
    ours = itr_eval.evaluate(scores, img_ids, txt_img)
    ref = reference_itm_eval(*reference_layout(scores, img_ids, txt_img))
    for ours_key, ref_key in [
        ("i2t_r1", "txt_r1"),
        ("i2t_r5", "txt_r5"),
        ("i2t_r10", "txt_r10"),
        ("t2i_r1", "img_r1"),
        ("t2i_r5", "img_r5"),
        ("t2i_r10", "img_r10"),
    ]:
        assert round(ours[ours_key], 2) == ref[ref_key]
    assert round(ours["rsum"] / 6, 2) == pytest.approx(ref["r_mean"], abs=0.006)


def test_ties_follow_the_reference_expression_with_a_stable_sort():
    scores, img_ids, txt_img = world(6, n_images=30, signal=0.8, decimals=0)
    ours = itr_eval.evaluate(scores, img_ids, txt_img)
    stable = reference_itm_eval(*reference_layout(scores, img_ids, txt_img), kind="stable")
    assert round(ours["i2t_r1"], 2) == stable["txt_r1"]
    assert round(ours["t2i_r1"], 2) == stable["img_r1"]
    assert round(ours["t2i_r5"], 2) == stable["img_r5"]


def test_chunking_does_not_change_the_ranks(monkeypatch):
    scores, img_ids, txt_img = world(7, signal=0.8, decimals=1)
    whole = itr_eval.evaluate(scores, img_ids, txt_img)
    monkeypatch.setattr(itr_eval, "CHUNK_ELEMENTS", 7 * scores.shape[1])  # several chunks
    assert itr_eval.evaluate(scores, img_ids, txt_img) == whole


# --- the command --------------------------------------------------------------------------------


def write_inputs(tmp_path, scores, img_ids, txt_img):
    np.save(tmp_path / "S.npy", scores)
    (tmp_path / "I.json").write_text(json.dumps(img_ids))
    (tmp_path / "T.json").write_text(json.dumps(txt_img))


def cli(tmp_path) -> int:
    return main(
        [
            "itr-eval",
            "--scores",
            str(tmp_path / "S.npy"),
            "--img-ids",
            str(tmp_path / "I.json"),
            "--txt-img",
            str(tmp_path / "T.json"),
            "--out",
            str(tmp_path / "M.json"),
        ]
    )


def test_cli_end_to_end(tmp_path):
    scores, img_ids, txt_img = world(8, signal=1.0, decimals=1)
    write_inputs(tmp_path, scores, img_ids, txt_img)
    assert cli(tmp_path) == 0
    written = json.loads((tmp_path / "M.json").read_text())
    assert_same(written, brute_metrics(scores, img_ids, txt_img))


def test_integer_ids_work_and_must_match_exactly(tmp_path, capsys):
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    write_inputs(tmp_path, scores, [7, 9], [7, 9])
    assert cli(tmp_path) == 0
    assert json.loads((tmp_path / "M.json").read_text())["rsum"] == 600.0
    write_inputs(tmp_path, scores, [7, 9], ["7", 9])
    assert cli(tmp_path) == 2
    err = capsys.readouterr().err
    assert "T.json: 1 texts name an image that is not a row of" in err
    assert "text 0 -> '7'" in err and "string vs integer" in err


@pytest.mark.parametrize(
    ("scores", "img_ids", "txt_img", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], ["a", "b"], r"S.npy: shape \(2, 3\) does not match 2"),
        (np.zeros(4), ["a", "b"], ["a", "b"], "S.npy: expected a 2-D images x texts matrix"),
        (np.zeros((2, 2)), ["a", "b"], ["a", "x"], "T.json: 1 texts name an image .* 'x'"),
        (np.zeros((2, 2)), ["a", "a"], ["a", "a"], "I.json: image id 'a' is on rows 0 and 1"),
        (np.zeros((2, 2)), ["a", "b"], ["a", "a"], r"T.json: 1 images of .*I.json have no text"),
        (np.array([[0.1, np.nan], [0.0, 1.0]]), ["a", "b"], ["a", "b"], "S.npy: 1 scores are"),
        (np.array([[0.1, np.inf], [0.0, 1.0]]), ["a", "b"], ["a", "b"], "row 0, column 1"),
        (np.zeros((1, 1)), [True], [True], "I.json: entry 0 is True"),
        (np.zeros((1, 1)), [], [], "I.json: expected a non-empty JSON list"),
        (np.array([["a"]]), ["a"], ["a"], "S.npy: scores must be real numbers"),
    ],
)
def test_bad_inputs_name_the_file_and_the_problem(
    tmp_path, capsys, scores, img_ids, txt_img, message
):
    write_inputs(tmp_path, scores, img_ids, txt_img)
    assert cli(tmp_path) == 2
    assert not (tmp_path / "M.json").exists()
    err = capsys.readouterr().err
    assert err.startswith("crossmodal itr-eval: error: ")
    assert re.search(message, err), err


def test_unreadable_score_files_are_errors(tmp_path):
    (tmp_path / "S.npy").write_text("not an array")
    with pytest.raises(DataFormatError, match="S.npy: not a readable .npy array"):
        itr_eval.load_scores(tmp_path / "S.npy")
    np.save(tmp_path / "P.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match="P.npy: not a readable .npy array"):
        itr_eval.load_scores(tmp_path / "P.npy")
    with pytest.raises(DataFormatError, match="missing.npy: file not found"):
        itr_eval.load_scores(tmp_path / "missing.npy")
