"""ReCoD: describe, retrieve the closest image, ask how the target differs, repeat."""
