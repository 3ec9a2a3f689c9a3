"""Compositional image retrieval: a reference image plus "add X, remove Y" finds a target image.

Ported from safinal/compositional-image-retrieval (winner of the Rayan challenge), read at commit
a0c795f. Citations in docstrings name the reference's files: ``TD`` =
src/token_classification/dataset.py, ``TT`` = src/token_classification/train.py, ``RC`` =
src/retrieval_model/token_classifier.py, ``RG`` = src/retrieval_model/generate_embeds.py,
``RD`` = src/retrieval_model/dataset.py, ``RE`` = src/retrieval_model/evaluate.py, ``RL`` =
src/retrieval_model/loss.py, ``RM`` = src/retrieval_model/model.py, ``RT`` =
src/retrieval_model/train.py, ``MF`` = src/model_factory.py, ``CT`` = config/token_cls_cfg.yaml,
``CR`` = config/retrieval_cfg.yaml.

Modules:

* :mod:`crossmodal.cir.tagger_data` synthesises the tagger's sentences from prompt templates
  and object names and labels them word by word (add / remove / other).
* :mod:`crossmodal.cir.tagger` trains and runs the DistilBERT token classifier and merges
  tagged words into phrases and CLIP prompts.
* :mod:`crossmodal.cir.compose` holds the query arithmetic, the metrics and the
  one-query-per-target batch sampler.
* :mod:`crossmodal.cir.projection` fine-tunes the image tower's projection with InfoNCE.
"""
