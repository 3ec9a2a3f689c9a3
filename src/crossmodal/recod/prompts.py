"""The reference prompts, verbatim (including the original's typo in the system prompt)."""

LLAVA_SYSTEM = (
    "You are an artificial intelligence assistant. The assistant identifies distinct visual "
    "features of images that differentiate it from reference desctiptions."
)
BASE_PROMPT = "Describe the image in great detail."
BASE_PREFILL = "The image shows"
TEXT_REFERENCE_PROMPT = (
    'Reference descriptions:\n"""\n{references}\n"""\nDescribe this image by thinking about how '
    "it is different from the descriptions above, without mentioning the difference, but giving "
    "details only about the image."
)
IMAGE_REFERENCE_PROMPT = (
    "Describe the first image by thinking about how it is different from the second image, "
    "without mentioning the difference, but giving details only about the first image."
)
IMAGE_REFERENCE_PREFILL = "The first image shows"
