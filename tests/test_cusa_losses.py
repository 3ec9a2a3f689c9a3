"""CUSA losses against values computed from the formulas with plain numpy, on a 4x4 batch.

The expected numbers never go through torch: cosine similarities, softmaxes, the contrastive
loss (with the reference's "mean" mode dividing each row by the batch size) and the KL terms
are written out here, with the clamped temperatures and the frozen teacher temperature.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from crossmodal.cusa import losses
from crossmodal.cusa.losses import (
    REFERENCE_SETTINGS,
    CusaBatch,
    CusaHeads,
    CusaLoss,
    HeadOutputs,
)
from crossmodal.errors import CrossmodalError

N = 4
IDX = [0, 1, 1, 2]  # pairs 1 and 2 are two captions of one image: both are positives


# --- the formulas in numpy --------------------------------------------------------------------


def np_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.sqrt((a * a).sum(1, keepdims=True))
    b = b / np.sqrt((b * b).sum(1, keepdims=True))
    return a @ b.T


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def np_targets(idx: list[int] | None) -> np.ndarray:
    if idx is None:
        return np.eye(N)
    pos = (np.array(idx)[:, None] == np.array(idx)[None, :]).astype(float)
    return pos / pos.sum(1, keepdims=True)


def np_contrastive(s_i2t: np.ndarray, tau: float, idx: list[int] | None, mode: str) -> float:
    """ContrastiveLoss then ``/ 2 * rate 1.0``; "mean" is a mean over the row's N entries."""
    t = np_targets(idx)
    total = 0.0
    for s in (s_i2t, s_i2t.T):
        per_entry = np_log_softmax(s / tau) * t
        per_row = per_entry.mean(1) if mode == "mean" else per_entry.sum(1)
        total += -per_row.mean()
    return total / 2.0


def np_kl_batchmean(student: np.ndarray, tau: float, teacher: np.ndarray, tau_s: float) -> float:
    """KL(P_teacher || Q_student) summed over the matrix and divided by its rows."""
    log_p = np_log_softmax(teacher / tau_s)
    log_q = np_log_softmax(student / tau)
    return float((np.exp(log_p) * (log_p - log_q)).sum() / student.shape[0])


# --- fixtures ---------------------------------------------------------------------------------


def features(seed: int, d: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, d))


def make_batch(idx: list[int] | None = IDX) -> tuple[CusaBatch, dict[str, np.ndarray]]:
    arrays = {
        "cross_image": features(1),
        "cross_text": features(2),
        "uni_image": features(3),
        "uni_text": features(4),
        "teacher_image": features(5, d=5),
        "teacher_text": features(6, d=6),
    }
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items()}
    heads = HeadOutputs(t["cross_image"], t["cross_text"], t["uni_image"], t["uni_text"])
    index = None if idx is None else torch.tensor(idx)
    return CusaBatch(heads, t["teacher_image"], t["teacher_text"], index), arrays


def loss_module(**changes) -> CusaLoss:
    """The loss in float64, its temperatures set to the exact decimal values (a float32
    parameter converted to float64 would carry 0.05 as 0.0500000007)."""
    settings = dataclasses.replace(REFERENCE_SETTINGS, **changes)
    module = CusaLoss(settings).double()
    set_values(
        module,
        tau=settings.tau,
        cross_tau=settings.cross_tau,
        cross_the_softlabel_tau=settings.softlabel_tau,
        uni_tau_image=settings.uni_tau,
        uni_tau_text=settings.uni_tau,
    )
    return module


def set_values(module: CusaLoss, **values: float) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).fill_(value)


# --- contrastive --------------------------------------------------------------------------------


def test_contrastive_mean_mode_with_multi_positives_and_clamped_tau():
    batch, a = make_batch()
    module = loss_module()
    set_values(module, tau=0.5)  # above tau_max: the forward clamps the value to 0.10
    terms = module(batch)
    assert module.tau.item() == pytest.approx(0.10)
    s = np_cos(a["cross_image"], a["cross_text"])
    expected = np_contrastive(s, 0.10, IDX, "mean")
    assert terms.contrastive.item() == pytest.approx(expected, rel=1e-12)
    # the quirk is a division by the batch size, not by anything else
    assert expected == pytest.approx(np_contrastive(s, 0.10, IDX, "sum") / N, rel=1e-12)
    # idx matters: without it the targets are the identity and the value differs
    assert expected != pytest.approx(np_contrastive(s, 0.10, None, "mean"), rel=1e-3)


def test_contrastive_sum_mode_is_standard_cross_entropy():
    batch, a = make_batch(idx=None)
    module = loss_module(contrastive_mode="sum")
    terms = module(batch)
    s = np_cos(a["cross_image"], a["cross_text"]) / 0.05
    ce = torch.nn.functional.cross_entropy  # the textbook definition, for contrast
    labels = torch.arange(N)
    textbook = (ce(torch.tensor(s), labels) + ce(torch.tensor(s.T), labels)) / 2
    assert terms.contrastive.item() == pytest.approx(textbook.item(), rel=1e-12)
    assert terms.contrastive.item() == pytest.approx(
        np_contrastive(s * 0.05, 0.05, None, "sum"), rel=1e-12
    )


def test_uniform_similarities_give_log_n_over_n_in_mean_mode():
    """Identical features: every softmax is uniform, -log(1/4) per positive; the mean mode
    divides by the 4 columns, so each direction is ln(4)/4 and their average too."""
    same = torch.ones(N, 3, dtype=torch.float64)
    heads = HeadOutputs(same, same, same, same)
    batch = CusaBatch(heads, same, same, None)
    terms = loss_module()(batch)
    assert terms.contrastive.item() == pytest.approx(math.log(4) / 4, rel=1e-12)
    assert terms.csa.item() == pytest.approx(0.0, abs=1e-15)  # teacher and student both uniform
    assert terms.usa.item() == pytest.approx(0.0, abs=1e-15)
    terms_sum = loss_module(contrastive_mode="sum")(batch)
    assert terms_sum.contrastive.item() == pytest.approx(math.log(4), rel=1e-12)


# --- CSA and USA --------------------------------------------------------------------------------


def test_csa_is_teacher_to_student_kl_batchmean_with_clamped_cross_tau():
    batch, a = make_batch()
    module = loss_module()
    set_values(module, cross_tau=0.05)  # below its minimum: clamped to 0.10
    terms = module(batch)
    assert module.cross_tau.item() == pytest.approx(0.10)
    s = np_cos(a["cross_image"], a["cross_text"])
    a_img = np_cos(a["teacher_image"], a["teacher_image"])
    a_txt = np_cos(a["teacher_text"], a["teacher_text"])
    kl_i2t = np_kl_batchmean(s, 0.10, a_img, 1.0)
    kl_t2i = np_kl_batchmean(s.T, 0.10, a_txt, 1.0)
    expected = (kl_i2t + kl_t2i) / 2 * 0.1
    assert terms.csa.item() == pytest.approx(expected, rel=1e-12)
    # the test tells the KL direction and the reduction apart
    reverse = np_kl_batchmean(a_img, 1.0, s, 0.10)
    assert kl_i2t != pytest.approx(reverse, rel=1e-3)


def test_usa_uses_one_temperature_per_modality_and_the_frozen_teacher_temperature():
    batch, a = make_batch()
    module = loss_module()
    # image temperature above its bound, text inside; teacher temperature above its bound
    set_values(module, uni_tau_image=2.0, uni_tau_text=0.3, cross_the_softlabel_tau=3.0)
    terms = module(batch)
    assert module.uni_tau_image.item() == pytest.approx(1.0)
    assert module.uni_tau_text.item() == pytest.approx(0.3)
    assert module.cross_the_softlabel_tau.item() == pytest.approx(1.0)
    u_img = np_cos(a["uni_image"], a["uni_image"])
    u_txt = np_cos(a["uni_text"], a["uni_text"])
    a_img = np_cos(a["teacher_image"], a["teacher_image"])
    a_txt = np_cos(a["teacher_text"], a["teacher_text"])
    expected = np_kl_batchmean(u_img, 1.0, a_img, 1.0) + np_kl_batchmean(u_txt, 0.3, a_txt, 1.0)
    expected = expected / 2 * 0.5
    assert terms.usa.item() == pytest.approx(expected, rel=1e-12)


def test_frozen_teacher_temperature_below_one_changes_csa_as_the_formula_says():
    batch, a = make_batch()
    module = loss_module()
    set_values(module, cross_the_softlabel_tau=0.2)  # inside [0.10, 1.00]: kept
    terms = module(batch)
    s = np_cos(a["cross_image"], a["cross_text"])
    a_img = np_cos(a["teacher_image"], a["teacher_image"])
    a_txt = np_cos(a["teacher_text"], a["teacher_text"])
    expected = (np_kl_batchmean(s, 0.45, a_img, 0.2) + np_kl_batchmean(s.T, 0.45, a_txt, 0.2)) / 2
    assert terms.csa.item() == pytest.approx(expected * 0.1, rel=1e-12)


def test_total_is_the_sum_of_the_weighted_terms_and_rates_zero_switch_terms_off():
    batch, _ = make_batch()
    terms = loss_module()(batch)
    total = terms.csa.item() + terms.usa.item() + terms.contrastive.item()
    assert terms.total.item() == pytest.approx(total, rel=1e-15)
    only_contrastive = loss_module(csa_rate=0.0, usa_rate=0.0)(batch)
    assert only_contrastive.csa.item() == 0.0 and only_contrastive.usa.item() == 0.0
    assert only_contrastive.contrastive.item() == pytest.approx(terms.contrastive.item())


# --- gradients and heads ------------------------------------------------------------------------


def head_batch(heads: CusaHeads, seed: int = 0) -> tuple[CusaBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(N, 16, generator=g), torch.randn(N, 16, generator=g)
    teacher_image = torch.randn(N, 5, generator=g, requires_grad=True)
    teacher_text = torch.randn(N, 7, generator=g)
    batch = CusaBatch(heads(image, text), teacher_image, teacher_text, torch.tensor(IDX))
    return batch, teacher_image


def test_gradients_reach_both_head_pairs_and_the_learnable_temperatures_only():
    torch.manual_seed(0)
    heads, module = CusaHeads(16), CusaLoss(REFERENCE_SETTINGS)
    batch, teacher_image = head_batch(heads)
    module(batch).total.backward()
    for name, p in heads.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name in ("tau", "cross_tau", "uni_tau_image", "uni_tau_text"):
        grad = getattr(module, name).grad
        assert grad is not None and torch.isfinite(grad) and grad != 0, name
    assert not module.cross_the_softlabel_tau.requires_grad
    assert module.cross_the_softlabel_tau.grad is None
    assert teacher_image.grad is None  # the teacher is a constant


def test_uni_heads_learn_only_from_usa():
    torch.manual_seed(0)
    heads, module = CusaHeads(16), CusaLoss(dataclasses.replace(REFERENCE_SETTINGS, usa_rate=0.0))
    batch, _ = head_batch(heads)
    module(batch).total.backward()
    grads = {n: p.grad for n, p in heads.named_parameters()}
    assert all(g is None for n, g in grads.items() if "uni" in n)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "cross" in n)


def test_clamp_sets_the_parameter_itself_and_keeps_its_gradient():
    """As the reference: the value is clamped in place before the loss, not inside the graph,
    so a temperature pushed past its bound still receives a gradient."""
    torch.manual_seed(0)
    heads, module = CusaHeads(16), CusaLoss(REFERENCE_SETTINGS)
    set_values(module, tau=0.5, cross_tau=5.0)
    batch, _ = head_batch(heads)
    module(batch).total.backward()
    assert module.tau.item() == pytest.approx(0.10) and module.tau.grad != 0
    assert module.cross_tau.item() == pytest.approx(0.99) and module.cross_tau.grad != 0


def test_heads_initialisation_and_reference_parameter_names():
    torch.manual_seed(0)
    heads = CusaHeads(256)
    names = {n for n, _ in heads.named_parameters()}
    assert names == {
        f"{ln}{kind}_{mod}_projection.{p}"
        for ln in ("", "ln_")
        for kind in ("cross", "uni")
        for mod in ("image", "text")
        for p in ("weight", "bias")
    }
    for kind in ("cross", "uni"):
        for mod in ("image", "text"):
            linear = getattr(heads, f"{kind}_{mod}_projection")
            assert abs(linear.weight.std().item() - 0.02) < 0.0005
            assert abs(linear.weight.mean().item()) < 0.0005
            # the bias keeps PyTorch's default U(-1/sqrt(d), 1/sqrt(d)): not zeroed, not N(0, .02)
            assert linear.bias.abs().max().item() <= 1 / 16 and linear.bias.std().item() > 0.03
            norm = getattr(heads, f"ln_{kind}_{mod}_projection")
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    module = CusaLoss(REFERENCE_SETTINGS)
    assert {n: p.item() for n, p in module.named_parameters()} == pytest.approx(
        {
            "tau": 0.05,
            "cross_tau": 0.45,
            "cross_the_softlabel_tau": 1.0,
            "uni_tau_image": 0.45,
            "uni_tau_text": 0.45,
        }
    )


def test_heads_route_cross_and_uni_features_through_their_own_layers():
    torch.manual_seed(0)
    heads = CusaHeads(8)
    x = torch.randn(N, 8)
    out = heads(x, x)
    manual = heads.cross_image_projection(heads.ln_cross_image_projection(x))
    assert torch.equal(out.cross_image, manual)
    assert torch.equal(out.uni_text, heads.uni_text_projection(heads.ln_uni_text_projection(x)))
    assert not torch.allclose(out.cross_image, out.uni_image)


# --- all_gather ---------------------------------------------------------------------------------


def test_all_gather_batch_on_a_one_process_group_is_the_local_batch(tmp_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        heads, module = CusaHeads(16), CusaLoss(REFERENCE_SETTINGS)
        batch, _ = head_batch(heads)
        gathered = losses.all_gather_batch(batch)
        assert torch.equal(gathered.idx, batch.idx)
        assert torch.equal(gathered.heads.uni_text, batch.heads.uni_text)
        local, through_gather = module(batch).total, module(gathered).total
        assert through_gather.item() == pytest.approx(local.item(), rel=1e-6)
        through_gather.backward()
        assert heads.cross_image_projection.weight.grad.abs().sum() > 0
        assert not gathered.teacher_image.requires_grad
    finally:
        dist.destroy_process_group()


def test_all_gather_without_a_process_group_says_how_to_fix_it():
    batch, _ = make_batch()
    with pytest.raises(CrossmodalError, match="torchrun.*all_gather to false"):
        losses.all_gather_batch(batch)


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"contrastive_mode": "avg"}, "contrastive_mode 'avg'"),
        ({"csa_rate": -0.1}, "csa_rate"),
        ({"tau": 0.2}, r"tau = 0.2 lies outside \[0.01, 0.1\]"),
        ({"uni_tau_min": 0.0}, "uni_tau_min/uni_tau_max"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(CrossmodalError, match=message):
        dataclasses.replace(REFERENCE_SETTINGS, **changes)


def test_idx_of_the_wrong_length_is_an_error():
    batch, _ = make_batch()
    batch.idx = torch.tensor([0, 1, 2])
    with pytest.raises(CrossmodalError, match="3 image indices for a batch of 4"):
        loss_module()(batch)
