"""Adapters: other formats -> canonical samples (one module per source format).

- :mod:`~brainvlm.data.adapters.llava`: LLaVA-classic ``conversations`` records (``from``/``value``).
- :mod:`~brainvlm.data.adapters.curriculum`: curriculum report records (``image``, ``prompt``, ``target``).
- :mod:`~brainvlm.data.adapters.vqa_rad`: VQA-RAD question files.
- :mod:`~brainvlm.data.adapters.llava_med`: LLaVA-Med VQA JSONL (``question_id``, ``text``, ``gpt4_answer``,
  ``domain``).
- :mod:`~brainvlm.data.adapters.roco`: the ROCOv2 / ImageCLEFmedical Caption layout (concepts, captions).

Every adapter returns canonical samples that :mod:`brainvlm.data.validate` checks; a record it cannot
convert is an :class:`AdapterError` naming the record.
"""


class AdapterError(ValueError):
    """A source record that cannot be converted; the message names the file, line or record."""
