"""CUSA's training objective: contrastive loss, CSA and USA, and the four projection heads.

Ported from the reference code, lerogo/aaai24_itr_cusa at commit 58e8721, read point by point.
Citations: ``M`` = unire/model.py, ``R`` = retrieval.py, ``C`` = configs/vitb32/coco/cusa.yaml
(the loss block is identical in all four published ``cusa.yaml`` files: ViT-B/32 and
ViT-L/14@336px on COCO and Flickr30k), ``O`` = optim/optim_factory.py.

What the reference does, and where this module does the same
-------------------------------------------------------------
* Heads (M:50-60, M:148-166, M:184-191): per modality, a cross-modal head (contrastive + CSA)
  and a uni-modal head (USA), each ``LayerNorm(d)`` then ``Linear(d, d)`` applied to the raw
  (unnormalised) backbone features. Only the Linear *weights* are re-initialised, N(0, 0.02);
  Linear biases and LayerNorm keep PyTorch's defaults. :class:`CusaHeads` keeps the reference's
  attribute names, so the head entries of a reference checkpoint load as they are.
* Student similarities (M:168-182): features divided by their L2 norm (no epsilon);
  image-text ``S_i2t = img @ txt.T`` and ``S_t2i = S_i2t.T``; uni-modal ``img @ img.T`` and
  ``txt @ txt.T`` from the uni heads.
* Teacher similarities (M:363-369, R:95, R:224-227): under ``no_grad``, sentence-transformers'
  ``util.cos_sim`` (``F.normalize(p=2, dim=1)`` then a matrix product) of the external image
  features (Unicom, precomputed) and text features (all-mpnet-base-v2), within the batch.
* Contrastive loss (M:234-252, M:462-467): targets are the rows of ``eq(idx, idx.T)`` divided by
  their sums (several captions of one image in a batch are all positives), the identity without
  ``idx``. ``contrastive_loss_mode: "mean"`` (C) computes
  ``-mean_j(log_softmax(S / tau)_ij * T_ij)`` and then the mean over rows, i.e. the usual soft
  cross-entropy divided by the number of columns (the batch size, or the gathered batch size).
  That quirk is reproduced exactly (it scales the contrastive gradient by 1/N relative to CSA
  and USA); ``"sum"`` is the standard cross-entropy. i2t + t2i, then ``/ 2 * rate`` (rate 1.0).
* CSA (M:254-280, M:391-420): ``use_loss: "kl"``, ``cross_softlabel_mode: "each"`` (C):
  ``F.kl_div(log_softmax(S_i2t / tau_c), softmax(A_img / tau_s), reduction="batchmean")`` =
  ``KL(softmax(A_img / tau_s) || softmax(S_i2t / tau_c))`` summed over the matrix and divided by
  the number of rows; the same for ``S_t2i`` against the text teacher ``A_txt``; the two are
  averaged and multiplied by the rate 0.1.
* USA (M:422-460): the same KL of ``A_img`` against the uni image similarities and ``A_txt``
  against the uni text similarities, averaged, times the rate 0.5.
* Temperatures (C; M:62-109, M:184-225): the contrastive ``tau`` 0.05, learnable, bounds
  [0.01, 0.10]; CSA's ``use_same_tau: True`` gives one ``cross_tau`` for both directions, whose
  init and bounds are the means of the image and text values (M:70, M:290-291): 0.45 in
  [0.10, 0.99]; the teacher temperature ``use_same_softlabel_tau: True`` and
  ``is_block_softlabel_tau: True`` is one parameter 1.0 with ``requires_grad=False``, still
  clamped to [0.10, 1.00] (M:297-299), and USA reuses it (``use_cross_softlabel_same_softlabel_tau:
  True``, M:447-450); USA's ``use_same_tau: False`` gives ``uni_tau_image`` and
  ``uni_tau_text``, 0.45 each in [0.10, 1.00].
* Clamping (M:282-324, M:330): at the start of every forward, the *parameter value itself* is
  clamped in place under ``no_grad`` (not a log-temperature, and not a clamp inside the graph).
  So the gradient reaching a temperature at a bound is not zeroed, and an optimizer step may
  leave it outside its bounds until the next forward. :meth:`CusaLoss.forward` does the same.
* all_gather (M:14-34, M:337-367; C ``is_all_gather: False``): when on, ``idx``, the head
  outputs (through an autograd function whose backward keeps only the local slice of the
  gradient) and the teacher features are gathered from every rank before the similarities.
  Here that is :func:`all_gather_batch`, applied by the caller; the loss takes whatever batch it
  is given, so gathered and local batches are the same code path and testable without processes.
* Total (R:231): ``cross_modal + uni_modal + contrastive``.

Departures, and why
-------------------
1. Only the published configuration's branches are ported: CSA mode ``each``, ``use_loss:
   "kl"``, one shared CSA temperature, two USA temperatures, one frozen teacher temperature.
   The ``add``/``dot`` teacher fusions and ``use_loss: "contrastive"`` appear in no config of
   the reference; per-direction temperatures only in its configs/test.yaml smoke test. The
   published ``only_contrastive.yaml`` baseline is ``csa_rate: 0, usa_rate: 0`` here.
2. The loss takes head outputs, not images: the backbone forward (M:334-335) belongs to the
   training stage, which already has one way to load CLIP (the encoder registry).
3. The four heads always exist. The reference builds the uni heads only when USA is on; with
   ``usa_rate: 0`` (or ``csa_rate: 0``) the term is not computed and is an exact zero, which is
   what the reference returns for a switched-off term (M:388-389), but the unused heads stay in
   the state dict.
4. Temperatures follow the module's dtype and device (``.to()``, ``.double()``); the reference
   builds float32 tensors on the rank's GPU. Targets take the logits' dtype (the reference's
   are float32 and promote).
5. ``USA`` has one init and one pair of bounds shared by its image and text temperatures (the
   reference allows different values; every published config uses the same ones).
6. Not a loss matter, recorded for the training stage: the reference's optimizer puts the
   0-dim temperatures in the weight-decay group (O:31 exempts only 1-D tensors and biases), so
   AdamW decays them by ``weight_decay`` 1e-4 each step; the clamp bounds the effect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.errors import CrossmodalError

CONTRASTIVE_MODES = ("mean", "sum")


@dataclass(frozen=True)
class CusaSettings:
    """The loss block of a CUSA run. No defaults: the config schema holds them, and
    :data:`REFERENCE_SETTINGS` is the reference's published configuration."""

    contrastive_mode: str  # "mean" (the reference's quirk) or "sum" (standard cross-entropy)
    contrastive_rate: float
    csa_rate: float
    usa_rate: float
    tau: float  # contrastive temperature, learnable
    tau_min: float
    tau_max: float
    cross_tau: float  # CSA student temperature, learnable, shared by i2t and t2i
    cross_tau_min: float
    cross_tau_max: float
    uni_tau: float  # USA student temperatures (image and text), learnable, one each
    uni_tau_min: float
    uni_tau_max: float
    softlabel_tau: float  # teacher temperature, frozen, shared by CSA and USA
    softlabel_tau_min: float
    softlabel_tau_max: float
    all_gather: bool  # gather the batch from every rank before the similarities

    def __post_init__(self) -> None:
        if self.contrastive_mode not in CONTRASTIVE_MODES:
            raise CrossmodalError(
                f"cusa contrastive_mode {self.contrastive_mode!r}: choose one of "
                f"{list(CONTRASTIVE_MODES)} ('mean' is the reference's)"
            )
        for name in ("contrastive_rate", "csa_rate", "usa_rate"):
            if getattr(self, name) < 0:
                raise CrossmodalError(f"cusa {name} = {getattr(self, name)}: must be >= 0")
        for name in ("tau", "cross_tau", "uni_tau", "softlabel_tau"):
            init, low, high = (getattr(self, name + s) for s in ("", "_min", "_max"))
            if not 0 < low <= high:
                raise CrossmodalError(
                    f"cusa {name}_min/{name}_max = {low}/{high}: need 0 < min <= max"
                )
            if name != "softlabel_tau" and not low <= init <= high:
                # the reference clamps the frozen teacher temperature too, so an init outside
                # its bounds is clamped on the first forward (M:297-299); a learnable one that
                # starts outside its bounds is a configuration mistake
                raise CrossmodalError(
                    f"cusa {name} = {init} lies outside [{low}, {high}]: set it within its bounds"
                )


REFERENCE_SETTINGS = CusaSettings(
    contrastive_mode="mean",
    contrastive_rate=1.0,
    csa_rate=0.1,
    usa_rate=0.5,
    tau=0.05,
    tau_min=0.01,
    tau_max=0.10,
    cross_tau=0.45,
    cross_tau_min=0.10,
    cross_tau_max=0.99,
    uni_tau=0.45,
    uni_tau_min=0.10,
    uni_tau_max=1.00,
    softlabel_tau=1.00,
    softlabel_tau_min=0.10,
    softlabel_tau_max=1.00,
    all_gather=False,
)


# --- heads ------------------------------------------------------------------------------------


class CusaHeads(nn.Module):
    """The four projection heads (LayerNorm + Linear) over backbone features.

    The cross heads feed retrieval, the contrastive loss and CSA; the uni heads only USA (they
    shape the features during training and are not used at retrieval time, M:138-146).
    Attribute names are the reference's, so its checkpoints' head entries load unchanged.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.ln_cross_image_projection = nn.LayerNorm(embed_dim)
        self.ln_cross_text_projection = nn.LayerNorm(embed_dim)
        self.cross_image_projection = nn.Linear(embed_dim, embed_dim)
        self.cross_text_projection = nn.Linear(embed_dim, embed_dim)
        self.ln_uni_image_projection = nn.LayerNorm(embed_dim)
        self.ln_uni_text_projection = nn.LayerNorm(embed_dim)
        self.uni_image_projection = nn.Linear(embed_dim, embed_dim)
        self.uni_text_projection = nn.Linear(embed_dim, embed_dim)
        for linear in (
            self.cross_image_projection,
            self.cross_text_projection,
            self.uni_image_projection,
            self.uni_text_projection,
        ):
            nn.init.normal_(linear.weight, std=0.02)  # M:187-191: weights only, biases default

    def encode_image(self, features: Tensor, cross_modal: bool = True) -> Tensor:
        """Image head output (unnormalised), cross-modal or uni-modal (M:148-156)."""
        if cross_modal:
            return self.cross_image_projection(self.ln_cross_image_projection(features))
        return self.uni_image_projection(self.ln_uni_image_projection(features))

    def encode_text(self, features: Tensor, cross_modal: bool = True) -> Tensor:
        """Text head output (unnormalised), cross-modal or uni-modal (M:158-166)."""
        if cross_modal:
            return self.cross_text_projection(self.ln_cross_text_projection(features))
        return self.uni_text_projection(self.ln_uni_text_projection(features))

    def forward(self, image_features: Tensor, text_features: Tensor) -> HeadOutputs:
        return HeadOutputs(
            cross_image=self.encode_image(image_features, cross_modal=True),
            cross_text=self.encode_text(text_features, cross_modal=True),
            uni_image=self.encode_image(image_features, cross_modal=False),
            uni_text=self.encode_text(text_features, cross_modal=False),
        )


@dataclass
class HeadOutputs:
    """The four head outputs for one batch of (image, caption) pairs, each ``[N, d]``."""

    cross_image: Tensor
    cross_text: Tensor
    uni_image: Tensor
    uni_text: Tensor


@dataclass
class CusaBatch:
    """Everything the loss needs for one batch, local or already gathered from every rank.

    ``idx`` is the image index of each pair (pairs of one image are positives of each other);
    ``None`` means every pair is its own image (identity targets).
    """

    heads: HeadOutputs
    teacher_image: Tensor  # [N, d_t] external image features (Unicom in the reference)
    teacher_text: Tensor  # [N, d_t'] external text features (all-mpnet-base-v2)
    idx: Tensor | None


# --- similarities and losses ------------------------------------------------------------------


def _unit(x: Tensor) -> Tensor:
    """``x / ||x||`` per row, without an epsilon, as the reference's ``get_similarity``."""
    return x / x.norm(dim=1, keepdim=True)


def cross_logits(image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities image->text and text->image (its transpose), M:168-177."""
    logits_per_image = _unit(image) @ _unit(text).t()
    return logits_per_image, logits_per_image.t()


def uni_logits(features: Tensor) -> Tensor:
    """Cosine similarities within one modality, M:178-182."""
    unit = _unit(features)
    return unit @ unit.t()


@torch.no_grad()
def teacher_similarity(features: Tensor) -> Tensor:
    """Teacher cosine similarities within the given (local or gathered) batch, without a
    gradient: sentence-transformers' ``util.cos_sim(f, f)`` as the reference calls it."""
    unit = F.normalize(features, p=2, dim=1)
    return torch.mm(unit, unit.transpose(0, 1))


def positive_targets(idx: Tensor | None, n: int, like: Tensor) -> Tensor:
    """Row-normalised positives: ``eq(idx, idx.T) / row sums``, the identity without ``idx``."""
    if idx is None:
        return torch.eye(n, device=like.device, dtype=like.dtype)
    idx = idx.view(-1, 1)
    if idx.shape[0] != n:
        raise CrossmodalError(f"cusa: {idx.shape[0]} image indices for a batch of {n} pairs")
    pos = torch.eq(idx, idx.t()).to(like.dtype)
    return pos / pos.sum(1, keepdim=True)


def contrastive_loss(
    logits_per_image: Tensor,
    logits_per_text: Tensor,
    tau: Tensor,
    idx: Tensor | None,
    mode: str,
) -> Tensor:
    """i2t + t2i soft cross-entropy (M:234-252); ``mode="mean"`` divides each row's
    cross-entropy by the row length, exactly as the reference computes it."""
    targets = positive_targets(idx, logits_per_image.shape[0], logits_per_image)
    if mode == "mean":
        reduce = torch.mean
    elif mode == "sum":
        reduce = torch.sum
    else:
        raise CrossmodalError(f"cusa contrastive mode {mode!r}: choose 'mean' or 'sum'")
    loss_i2t = -reduce(F.log_softmax(logits_per_image / tau, dim=1) * targets, dim=1).mean()
    loss_t2i = -reduce(F.log_softmax(logits_per_text / tau, dim=1) * targets, dim=1).mean()
    return loss_i2t + loss_t2i


def soft_label_kl(logits: Tensor, teacher: Tensor, tau: Tensor, teacher_tau: Tensor) -> Tensor:
    """``KL(softmax(teacher / teacher_tau) || softmax(logits / tau))`` summed over the matrix
    and divided by its rows (``F.kl_div(..., reduction="batchmean")``, M:254-268)."""
    targets = F.softmax(teacher / teacher_tau, dim=1)
    log_inputs = F.log_softmax(logits / tau, dim=1)
    return F.kl_div(log_inputs, targets, reduction="batchmean")


@dataclass
class CusaLossTerms:
    """The three weighted terms (each already multiplied by its rate)."""

    contrastive: Tensor
    csa: Tensor
    usa: Tensor

    @property
    def total(self) -> Tensor:
        """What is back-propagated: cross + uni + contrastive, in the reference's order."""
        return self.csa + self.usa + self.contrastive


class CusaLoss(nn.Module):
    """The CUSA objective with its temperatures (parameter names as the reference's)."""

    def __init__(self, settings: CusaSettings) -> None:
        super().__init__()
        self.settings = settings
        self.tau = nn.Parameter(torch.tensor(settings.tau))
        self.cross_tau = nn.Parameter(torch.tensor(settings.cross_tau))
        self.cross_the_softlabel_tau = nn.Parameter(
            torch.tensor(settings.softlabel_tau), requires_grad=False
        )
        self.uni_tau_image = nn.Parameter(torch.tensor(settings.uni_tau))
        self.uni_tau_text = nn.Parameter(torch.tensor(settings.uni_tau))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp every temperature's value in place to its bounds (M:282-324)."""
        s = self.settings
        self.tau.clamp_(min=s.tau_min, max=s.tau_max)
        self.cross_tau.clamp_(min=s.cross_tau_min, max=s.cross_tau_max)
        self.cross_the_softlabel_tau.clamp_(min=s.softlabel_tau_min, max=s.softlabel_tau_max)
        self.uni_tau_image.clamp_(min=s.uni_tau_min, max=s.uni_tau_max)
        self.uni_tau_text.clamp_(min=s.uni_tau_min, max=s.uni_tau_max)

    def forward(self, batch: CusaBatch) -> CusaLossTerms:
        s, h = self.settings, batch.heads
        self.clamp_()
        zero = h.cross_image.new_zeros(())
        logits_per_image, logits_per_text = cross_logits(h.cross_image, h.cross_text)
        contrastive = zero
        if s.contrastive_rate:
            contrastive = contrastive_loss(
                logits_per_image, logits_per_text, self.tau, batch.idx, s.contrastive_mode
            )
            contrastive = contrastive / 2.0 * s.contrastive_rate
        csa = usa = zero
        if s.csa_rate or s.usa_rate:
            teacher_image = teacher_similarity(batch.teacher_image)
            teacher_text = teacher_similarity(batch.teacher_text)
            tau_s = self.cross_the_softlabel_tau
            if s.csa_rate:
                csa = soft_label_kl(logits_per_image, teacher_image, self.cross_tau, tau_s)
                csa = csa + soft_label_kl(logits_per_text, teacher_text, self.cross_tau, tau_s)
                csa = csa / 2.0 * s.csa_rate
            if s.usa_rate:
                uni_image, uni_text = uni_logits(h.uni_image), uni_logits(h.uni_text)
                usa = soft_label_kl(uni_image, teacher_image, self.uni_tau_image, tau_s)
                usa = usa + soft_label_kl(uni_text, teacher_text, self.uni_tau_text, tau_s)
                usa = usa / 2.0 * s.usa_rate
        return CusaLossTerms(contrastive=contrastive, csa=csa, usa=usa)


# --- all_gather -------------------------------------------------------------------------------


class _AllGather(torch.autograd.Function):
    """Concatenate a tensor from every rank; the backward keeps this rank's slice (M:14-31)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, rank: int, world_size: int) -> Tensor:  # type: ignore[override]
        output = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(output, tensor)
        ctx.rank, ctx.batch_size = rank, tensor.shape[0]
        return torch.cat(output, 0)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        start = ctx.batch_size * ctx.rank
        return grad_output[start : start + ctx.batch_size], None, None


def all_gather_batch(batch: CusaBatch) -> CusaBatch:
    """The batch gathered from every rank of the default process group, as the reference does
    with ``is_all_gather: True``. Every rank must hold the same number of pairs."""
    if not (dist.is_available() and dist.is_initialized()):
        raise CrossmodalError(
            "cusa all_gather is on but no torch.distributed process group is initialised: "
            "start training under torchrun, or set cusa all_gather to false"
        )
    rank, world = dist.get_rank(), dist.get_world_size()

    def gather(t: Tensor) -> Tensor:
        return _AllGather.apply(t, rank, world)

    heads = HeadOutputs(**{f.name: gather(getattr(batch.heads, f.name)) for f in _HEAD_FIELDS})
    with torch.no_grad():
        teacher_image, teacher_text = gather(batch.teacher_image), gather(batch.teacher_text)
    idx = None if batch.idx is None else gather(batch.idx)
    return CusaBatch(heads=heads, teacher_image=teacher_image, teacher_text=teacher_text, idx=idx)


_HEAD_FIELDS = dataclasses.fields(HeadOutputs)
