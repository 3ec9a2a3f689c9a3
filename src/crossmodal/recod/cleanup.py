"""Caption clean-up and sentence handling, exactly as the ReCoD scripts do them.

gyjung975/ReCoD's ``caption_processing`` (llava_base.py, llava_recod.py, qwen_base.py,
qwen_recod.py) removes 22 boilerplate phrases, in order, wherever they occur, case-sensitively,
stripping after each removal and capitalising nothing; qwen_recod_img.py removes 22 "first
image" variants after them. It is applied to LLaVA and Qwen outputs, base and loops alike, and
never to Claude's (``vlms.NAME.cleanup``). Sentences are ``text.split(". ")``, empty pieces
kept; Claude's loop appends only sentences of at least five space-separated words to the
retrieval query (claude_recod.py), while the stored description keeps them all.
"""

from __future__ import annotations

BOILERPLATE = (
    "The scene features",
    "The image is",
    "The image displays",
    "The image features",
    "The image captures",
    "The image depicts",
    "The image shows",
    "The image showcases",
    "The image portrays",
    "This scene features",
    "This image is",
    "This image displays",
    "This image features",
    "This image captures",
    "This image depicts",
    "This image shows",
    "This image showcases",
    "This image portrays",
    "In the image,",
    "In the scene,",
    "In this image,",
    "In this scene,",
)
# qwen_recod_img.py removes these after the 22 above (the image-based prompt's wording).
FIRST_IMAGE_BOILERPLATE = (
    "The first scene features",
    "The first image is",
    "The first image displays",
    "The first image features",
    "The first image captures",
    "The first image depicts",
    "The first image shows",
    "The first image showcases",
    "The first image portrays",
    "This first scene features",
    "This first image is",
    "This first image displays",
    "This first image features",
    "This first image captures",
    "This first image depicts",
    "This first image shows",
    "This first image showcases",
    "This first image portrays",
    "In the first image,",
    "In the first scene,",
    "In this first image,",
    "In this first scene,",
)


def phrases_for(method: str) -> tuple[str, ...]:
    """The phrases a method's outputs lose: image-based ReCoD adds the "first image" ones."""
    return BOILERPLATE + (FIRST_IMAGE_BOILERPLATE if method == "recod_img" else ())


def clean(text: str, phrases: tuple[str, ...] = BOILERPLATE) -> str:
    """Remove every occurrence of each phrase in turn, stripping after each (the reference's
    ``cap.replace(phrase, '').strip()``), so "The image shows" in mid-sentence goes too."""
    text = text.strip()
    for phrase in phrases:
        text = text.replace(phrase, "").strip()
    return text


def split_sentences(text: str) -> list[str]:
    """The reference's ``text.split('. ')``: no stripping, empty pieces kept."""
    return text.split(". ")


def keep_sentences(text: str, min_words: int = 0) -> list[str]:
    """Sentences of a loop output appended to the retrieval query: all of them, or (Claude)
    those of at least ``min_words`` words counted as ``len(s.split(' '))``."""
    return [s for s in split_sentences(text) if len(s.split(" ")) >= min_words]
