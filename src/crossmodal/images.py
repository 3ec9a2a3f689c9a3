"""Robust image loading for feature extraction.

Decodes with PIL, optionally in JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale when
the image is downscaled anyway: several times faster, pixels slightly different, so it is a
switch recorded in the provenance). Every failure is classified so it can be counted, never
silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# The modes CLIP preprocessing converts to RGB as the reference pipelines do (``convert('RGB')``).
CONVERTED_MODES = ("CMYK", "L", "LA", "P", "RGBA", "I", "I;16", "F", "1", "YCbCr")


@dataclass(frozen=True)
class LoadResult:
    image: Image.Image | None
    original_mode: str | None
    error: str | None  # None when loaded


def load_image(path: str | Path, draft_size: int | None = None) -> LoadResult:
    """Open and fully decode an image; classify failures instead of raising."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return LoadResult(None, None, "empty file")
        with Image.open(path) as im:
            mode = im.mode
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()  # decode now: truncation surfaces here
            # Loaded pixels outlive the closed file, so no defensive copy (it cost ~0.1 ms).
            return LoadResult(im.convert("RGB") if im.mode != "RGB" else im, mode, None)
    except FileNotFoundError:
        return LoadResult(None, None, "missing file")
    except UnidentifiedImageError:
        return LoadResult(None, None, "not an image (corrupt or unknown format)")
    except (OSError, SyntaxError, ValueError) as exc:
        return LoadResult(None, None, f"undecodable ({exc})")
