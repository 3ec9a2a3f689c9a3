"""CUSA: cross-modal and uni-modal soft-label alignment for image-text retrieval.

Huang et al., AAAI 2024; reference code lerogo/aaai24_itr_cusa. ``losses`` holds the training
objective and the projection heads (needs torch); ``itr_eval`` the retrieval metrics over plain
files (numpy only). Nothing is imported here, so the light ``itr-eval`` command never loads
torch.
"""
