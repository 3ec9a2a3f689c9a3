"""Robust image loading for feature extraction.

Decodes with PIL, optionally in JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale when
the image is downscaled anyway: several times faster, pixels slightly different, so it is a
switch recorded in the provenance). Every failure is classified so it can be counted, never
silently dropped.

Size limit. ``Image.open`` reads only the header, so the image size is checked against
``max_pixels`` before a single pixel is decoded: a 20000x20000 image (a decompression bomb, or
just a huge scan) becomes a counted skip instead of gigabytes of memory or a crashed worker.
While the header is read, PIL's own open-time bomb check is lifted so that ``max_pixels`` is
the one limit that applies (a user who raises it can decode bigger images); PIL's
``DecompressionBombError`` and ``DecompressionBombWarning`` are still turned into skips
wherever they surface.

Wide sample formats. ``convert('RGB')`` clips 16-bit, 32-bit and float samples to 0..255, so a
16-bit image comes out nearly white. They are scaled to 8 bits first (see ``_to_8bit``).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Default ceiling on width x height (40 MP): far above any COCO image (at most 640x640) and
# common camera photos, far below what makes a decode worker run out of memory.
DEFAULT_MAX_PIXELS = 40_000_000

# ``Image.MAX_IMAGE_PIXELS`` and the warnings filters are process globals: one lock keeps two
# threads from restoring each other's values.
_PIL_GLOBALS = threading.Lock()

# TIFF tags that tell how wide and how signed the samples of a mode "I" image really are.
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_SAMPLE_FORMAT = 339  # 1 unsigned, 2 signed, 3 float
_TIFF_SIGNED = 2


@dataclass(frozen=True)
class LoadResult:
    image: Image.Image | None
    original_mode: str | None
    error: str | None  # None when loaded


def too_large_reason(width: int, height: int, max_pixels: int) -> str:
    """The skip reason for an image above the pixel ceiling, naming the setting that lifts it."""
    return (
        f"too large: {width}x{height} = {width * height / 1e6:.1f} MP > max_pixels "
        f"{max_pixels / 1e6:.1f} MP (features.max_pixels)"
    )


def load_image(
    path: str | Path,
    draft_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> LoadResult:
    """Open and fully decode an image; classify failures instead of raising.

    ``max_pixels`` bounds width x height as the header declares it (before any JPEG draft
    reduction, so the skipped set does not depend on the draft switch); None keeps only PIL's
    own decompression-bomb check.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return LoadResult(None, None, "empty file")
        with _open_header(path, lift_pil_check=max_pixels is not None) as im:
            mode = im.mode
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                return LoadResult(None, mode, too_large_reason(width, height, max_pixels))
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()  # decode now: truncation surfaces here
            # Loaded pixels outlive the closed file, so no defensive copy (it cost ~0.1 ms).
            return LoadResult(_to_rgb(im), mode, None)
    except FileNotFoundError:
        return LoadResult(None, None, "missing file")
    except UnidentifiedImageError:
        return LoadResult(None, None, "not an image (corrupt or unknown format)")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return LoadResult(None, None, f"too large for PIL's decompression-bomb check ({exc})")
    except (OSError, SyntaxError, ValueError) as exc:
        return LoadResult(None, None, f"undecodable ({exc})")


def _open_header(path: Path, lift_pil_check: bool) -> Image.Image:
    """``Image.open`` (header only), with PIL's bomb warning raised as an error.

    With ``lift_pil_check`` PIL's open-time pixel limit is lifted for this call: the caller
    checks the size against its own configured limit right after.
    """
    with _PIL_GLOBALS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        if lift_pil_check:
            Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB as the reference pipelines' ``convert('RGB')``, wide samples scaled to 8 bits first."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        im = _to_8bit(im)
    return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale one-band 16-bit, 32-bit integer or float samples to an 8-bit "L" image.

    - ``I;16`` (and ``I;16B``/``L``/``N``): v / 257, rounded: 65535 -> 255, and an 8-bit image
      widened by v * 257 comes back exactly. ``I;16S`` is offset by 32768 first.
    - ``I`` (32-bit signed storage): the sample width and signedness the file declares (TIFF
      BitsPerSample / SampleFormat). 16-bit samples scale as above; 32-bit unsigned samples
      map 0..2**32-1 and signed ones -2**31..2**31-1 linearly onto 0..255 (any other declared
      width likewise over its own range). A format that does
      not declare them: samples within 0..65535 are taken as 16-bit (Pillow widens 16-bit PGM
      and PNG into mode I in some versions), others as signed 32-bit.
    - ``F`` (float): the usual convention of 0.0 = black and 1.0 = white; values outside are
      clipped, NaN is black.
    """
    arr = np.asarray(im)
    if im.mode == "F":
        unit = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        scaled = np.clip(unit, 0.0, 1.0) * 255.0
    else:
        bits, signed = _sample_format(im, arr)
        wide = arr.astype(np.int64)
        if bits == 32 and not signed:
            wide = wide & 0xFFFFFFFF  # unsigned 32-bit samples stored in a signed int32
        if signed:
            wide = wide + (1 << (bits - 1))
        scaled = np.clip(wide, 0, (1 << bits) - 1) * (255.0 / ((1 << bits) - 1))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def _sample_format(im: Image.Image, arr: np.ndarray) -> tuple[int, bool]:
    """(bits per sample, signed) of an integer image: from the mode, the TIFF tags, the data."""
    if im.mode.startswith("I;16"):
        return 16, im.mode.endswith("S")
    if im.mode.startswith("I;32"):
        return 32, im.mode.endswith("S")
    tags = getattr(im, "tag_v2", None)
    if tags is not None and _TIFF_BITS_PER_SAMPLE in tags:
        bits = tags[_TIFF_BITS_PER_SAMPLE]
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = tags.get(_TIFF_SAMPLE_FORMAT, 1)
        fmt = int(fmt[0] if isinstance(fmt, tuple) else fmt)
        return max(1, min(bits, 32)), fmt == _TIFF_SIGNED
    if arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 0xFFFF:
        return 16, False
    return 32, True
