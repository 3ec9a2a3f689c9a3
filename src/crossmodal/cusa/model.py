"""The CUSA student: a CLIP backbone, the four heads and the loss temperatures in one module.

One module, as the reference's ``unire`` (unire/model.py): under DDP the temperatures' gradients
are averaged with the backbone's, and one state dict holds everything a retrieval run needs.
The backbone comes from the encoder registry (:func:`load_trainable_clip`), the only way the
project loads CLIP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import Tensor, nn

from crossmodal.cusa.losses import (
    CusaBatch,
    CusaHeads,
    CusaLoss,
    CusaLossTerms,
    CusaSettings,
    all_gather_batch,
)
from crossmodal.encoders.registry import TrainableClip
from crossmodal.errors import CrossmodalError

# What each method variant switches off; the rates of what stays on come from the config.
VARIANTS: dict[str, dict[str, float]] = {
    "contrastive": {"csa_rate": 0.0, "usa_rate": 0.0},  # the reference's only_contrastive.yaml
    "csa": {"usa_rate": 0.0},
    "usa": {"csa_rate": 0.0},
    "cusa": {},
}


def variant_settings(settings: CusaSettings, method: str) -> CusaSettings:
    """The loss settings of one method variant (``contrastive``, ``csa``, ``usa``, ``cusa``)."""
    if method not in VARIANTS:
        raise CrossmodalError(f"cusa method {method!r}: choose one of {sorted(VARIANTS)}")
    return replace(settings, **VARIANTS[method])


class CusaStudent(nn.Module):
    """CLIP + heads + temperatures. ``forward`` returns the three loss terms of a batch."""

    def __init__(self, clip: TrainableClip, settings: CusaSettings) -> None:
        super().__init__()
        self.settings = settings
        self.clip = clip.model
        self.heads = CusaHeads(clip.embed_dim)
        self.loss = CusaLoss(settings)
        self.freeze_unused()

    def freeze_unused(self) -> None:
        """Parameters the variant's loss never reaches get ``requires_grad=False``.

        They receive no gradient either way, so AdamW leaves them unchanged (it skips
        parameters without a gradient, weight decay included), as in the reference; freezing
        them says so, and lets DDP run without ``find_unused_parameters``. CLIP's own
        ``logit_scale`` (and ``logit_bias``) are unused by CUSA's losses.
        """
        s = self.settings
        unused: list[nn.Parameter] = [
            p
            for n, p in self.clip.named_parameters()
            if n.split(".")[-1] in ("logit_scale", "logit_bias")
        ]
        if not s.contrastive_rate:
            unused.append(self.loss.tau)
        if not s.csa_rate:
            unused.append(self.loss.cross_tau)
        if not s.usa_rate:
            unused += [self.loss.uni_tau_image, self.loss.uni_tau_text]
            for name, p in self.heads.named_parameters():
                if "uni_" in name:
                    unused.append(p)
        for p in unused:
            p.requires_grad_(False)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """Retrieval image embedding: the cross-modal head over CLIP's image features."""
        return self.heads.encode_image(self.clip.encode_image(pixels), cross_modal=True)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Retrieval text embedding: the cross-modal head over CLIP's text features."""
        return self.heads.encode_text(self.clip.encode_text(tokens), cross_modal=True)

    def forward(
        self,
        pixels: Tensor,
        tokens: Tensor,
        teacher_image: Tensor,
        teacher_text: Tensor,
        idx: Tensor | None,
    ) -> CusaLossTerms:
        heads = self.heads(self.clip.encode_image(pixels), self.clip.encode_text(tokens))
        batch = CusaBatch(
            heads=heads, teacher_image=teacher_image, teacher_text=teacher_text, idx=idx
        )
        if self.settings.all_gather:
            batch = all_gather_batch(batch)
        return self.loss(batch)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the reference's ``add_weight_decay`` (optim/optim_factory.py:25-38):
    1-d tensors and names ending in ``.bias`` without decay, every other trainable tensor
    (0-d temperatures included) with it. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in _trainable(model):
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def _trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    for name, p in model.named_parameters():
        if p.requires_grad:
            yield name, p


def save_student(path, student: CusaStudent, spec: dict, extra: dict) -> None:
    """The selected model: weights, the student's encoder entry and loss settings (to rebuild
    it), plus what selected it. Written atomically."""
    from dataclasses import asdict

    from crossmodal.io import atomic_path

    state = {
        "student": spec,
        "settings": asdict(student.settings),
        "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_student(path, device: torch.device) -> tuple[CusaStudent, TrainableClip]:
    """A saved student in eval mode on ``device``, with its backbone's preprocessing."""
    from crossmodal.encoders.registry import load_trainable_clip

    state = torch.load(path, map_location="cpu", weights_only=False)
    clip = load_trainable_clip(state["student"], device=str(device))
    student = CusaStudent(clip, CusaSettings(**state["settings"]))
    student.load_state_dict(state["state_dict"])
    return student.to(device).eval(), clip
