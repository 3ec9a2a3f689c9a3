"""Zero-shot classification: WCA (weighted visual-text cross alignment) and its baselines.

Follows the reference code of Li et al., "Visual-Text Cross Alignment: Refining the Similarity
Score in Vision-Language Models" (ICML 2024), github.com/JinhaoLee/WCA (= tmlr-group/WCA);
docstrings cite its files as ``main.py:LINE`` and ``helper.py:LINE``.

- :mod:`crossmodal.wca.crops`: the full image plus M seeded random square crops per image,
  encoded once and cached as a NumPy array (the ``wca-crops`` stage).
- :mod:`crossmodal.wca.texts`: the class texts of every method (CLIP, CLIP-E, CLIP-D, Waffle,
  CuPL, WCA), built exactly as the reference builds them.
- :mod:`crossmodal.wca.scoring`: embeddings to class vectors and image vectors, vectorised;
  accuracy per run, mean and population standard deviation over runs.
- :mod:`crossmodal.wca.stage`: the ``zeroshot`` and ``zeroshot-summary`` stages.
- :mod:`crossmodal.wca.data`: the classification data sets (registry, official layouts, the
  reference's class names, prompt files and word list) and ``prepare-classification``.
- :mod:`crossmodal.wca.describe`: CuPL-style class descriptions from any LLM through the
  journalled generation layer (``wca-describe-classes``).
- :mod:`crossmodal.wca.wiring`: how the rules in workflow/rules/zeroshot.smk fill the jobs.
- :mod:`crossmodal.wca.demo_world`: the demo world's labelled shapes.
"""
