"""Dialogue-to-photo retrieval: LLM visual descriptors, fine-tuned CLIP and a FAISS index."""
