"""The ReCoD comparison prompts, verbatim from gyjung975/ReCoD's template.py.

The base query, the system prompt (LLaVA's replaced one, typo included) and the prefills are
per-VLM settings (``vlms.NAME.base_prompt``, ``system_prompt``, ``prefill``,
``compare_prefill``): ``config/config.yaml`` holds the reference's values for each model.
"""

TEXT_REFERENCE_PROMPT = (
    'Reference descriptions:\n"""\n{references}\n"""\nDescribe this image by thinking about how '
    "it is different from the descriptions above, without mentioning the difference, but giving "
    "details only about the image."
)
IMAGE_REFERENCE_PROMPT = (
    "Describe the first image by thinking about how it is different from the second image, "
    "without mentioning the difference, but giving details only about the first image."
)
