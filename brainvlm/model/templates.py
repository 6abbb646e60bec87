"""Chat templates and stop tokens for the LLaVA families, with assistant masks that training can trust.

The templates shipped with llava-hf checkpoints carry no ``{% generation %}`` markers, so the
processor's assistant mask comes back all zeros, and they put all of a turn's images before its text.
Each family here has a template that renders a turn's parts where they stand (an image part becomes the
model's image token, consecutive parts are joined by a newline) and wraps every assistant reply,
including its end-of-turn token, in generation markers:

    chatml   <|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n{reply<|im_end|>}\\n
             (Qwen: llava-interleave, llava-onevision, the tiny default)
    vicuna   <s>USER: ... ASSISTANT:{ reply</s>}            (LLaVA-1.5, Vicuna)
    mistral  <s>[INST] ... [/INST]{ reply</s>}              (LLaVA-NeXT Mistral, LLaVA-Med v1.5)
    llama3   <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n...<|eot_id|>
             <|start_header_id|>assistant<|end_header_id|>\\n\\n{reply<|eot_id|>}   (LLaVA-LLaMA-3)

Braces mark what the assistant mask covers: the reply and its stop token, nothing of the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

IMAGE_TOKEN = "<image>"
_IMAGE_SLOT = "__BRAINVLM_IMAGE_TOKEN__"
_GENERATION_RE = re.compile(r"{%-?\s*generation\s*-?%}")

# Renders a message's content (a string, or a list of text/image parts) in the order given.
_RENDER_CONTENT = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- if part['type'] == 'image' -%}{{ '" + _IMAGE_SLOT + "' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)
_BOS = "{%- if bos_token -%}{{ bos_token }}{%- endif -%}"

_CHATML = (
    _RENDER_CONTENT
    + "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{ render_content(message['content']) + '<|im_end|>' }}{%- endgeneration -%}{{ '\\n' }}"
    "{%- else -%}{{ render_content(message['content']) + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
_VICUNA = (
    _RENDER_CONTENT + _BOS
    + "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ render_content(message['content']) + ' ' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER: ' + render_content(message['content']) + ' ' }}"
    "{%- else -%}{{ 'ASSISTANT:' }}"
    "{%- generation -%}{{ ' ' + render_content(message['content']) + '</s>' }}{%- endgeneration -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
_MISTRAL = (
    _RENDER_CONTENT + _BOS
    + "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = render_content(message['content']) + '\\n\\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '[INST] ' + ns.system + render_content(message['content']) + ' [/INST]' }}{%- set ns.system = '' -%}"
    "{%- else -%}"
    "{%- generation -%}{{ ' ' + render_content(message['content']) + '</s>' }}{%- endgeneration -%}"
    "{%- endif -%}{%- endfor -%}"
)
_LLAMA3 = (
    _RENDER_CONTENT + _BOS
    + "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{ render_content(message['content']) + '<|eot_id|>' }}{%- endgeneration -%}"
    "{%- else -%}{{ render_content(message['content']) + '<|eot_id|>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TemplateSpec:
    """One family's chat format.

    Args:
        family: ``chatml``, ``vicuna``, ``mistral`` or ``llama3``.
        chat_template: Jinja template (image parts rendered in place, replies in generation markers).
        stop_tokens: end-of-turn token first; generation stops on any of them.
        image_token: the string an image part renders as (expanded by the processor).
        generation_prompt: what ``add_generation_prompt=True`` appends after the last user turn.
    """

    family: str
    chat_template: str
    stop_tokens: list[str]
    image_token: str = IMAGE_TOKEN
    generation_prompt: str = ""

    def with_image_token(self, image_token: str) -> TemplateSpec:
        """The same spec for a processor whose image token is another string."""
        template = self.chat_template.replace(_quoted(self.image_token), _quoted(image_token))
        return replace(self, chat_template=template, image_token=image_token)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _spec(family: str, template: str, stop: str, generation_prompt: str) -> TemplateSpec:
    return TemplateSpec(family=family, chat_template=template.replace(_quoted(_IMAGE_SLOT), _quoted(IMAGE_TOKEN)),
                        stop_tokens=[stop], generation_prompt=generation_prompt)


FAMILY_TEMPLATES: dict[str, TemplateSpec] = {
    "chatml": _spec("chatml", _CHATML, "<|im_end|>", "<|im_start|>assistant\n"),
    "vicuna": _spec("vicuna", _VICUNA, "</s>", "ASSISTANT:"),
    "mistral": _spec("mistral", _MISTRAL, "</s>", ""),
    "llama3": _spec("llama3", _LLAMA3, "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
}
FAMILIES = tuple(FAMILY_TEMPLATES)

# Literal text of a checkpoint's own template that names its family, most specific first.
_TEMPLATE_MARKERS = (("llama3", "<|start_header_id|>"), ("chatml", "<|im_start|>"), ("mistral", "[INST]"),
                     ("vicuna", "ASSISTANT:"), ("vicuna", "USER:"))
_VOCAB_MARKERS = (("llama3", "<|eot_id|>"), ("chatml", "<|im_start|>"), ("mistral", "[INST]"))
_QWEN_TYPES = ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")
_LLAMA3_MIN_VOCAB = 128000


class AssistantMaskError(ValueError):
    """The assistant mask covers no token: training on it would be a silent zero loss."""


def has_generation_markers(template: str | None) -> bool:
    """True when a chat template wraps assistant content in ``{% generation %}`` markers."""
    return bool(template) and bool(_GENERATION_RE.search(template))


def template_text(processor_or_tokenizer: Any) -> str:
    """The chat template of a processor (or tokenizer) as one string ('' when it has none)."""
    template = getattr(processor_or_tokenizer, "chat_template", None)
    if template is None and hasattr(processor_or_tokenizer, "tokenizer"):
        template = getattr(processor_or_tokenizer.tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or "\n".join(str(t) for t in template.values())
    return template or ""


def family_from_config(model_config: Any) -> str | None:
    """The family a model config implies (Qwen -> chatml, Mistral, LLaMA-3 by vocabulary, else vicuna)."""
    text_config = getattr(model_config, "text_config", model_config)
    model_type = getattr(text_config, "model_type", None)
    if model_type in _QWEN_TYPES:
        return "chatml"
    if model_type == "mistral":
        return "mistral"
    if model_type == "llama":
        return "llama3" if (getattr(text_config, "vocab_size", 0) or 0) >= _LLAMA3_MIN_VOCAB else "vicuna"
    return None


def detect_family(processor_or_tokenizer: Any, model_config: Any = None) -> str:
    """The chat family of a checkpoint: from its template text, then its vocabulary, then its config.

    Args:
        processor_or_tokenizer: a processor (its tokenizer is used for the vocabulary) or a tokenizer.
        model_config: optional model config (``text_config.model_type`` and ``vocab_size`` decide last).

    Returns:
        one of ``FAMILIES``.
    """
    template = template_text(processor_or_tokenizer)
    for family, marker in _TEMPLATE_MARKERS:
        if marker in template:
            return family
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for family, token in _VOCAB_MARKERS:
        if token in vocab:
            return family
    family = family_from_config(model_config) if model_config is not None else None
    if family is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"cannot tell the chat family of {name!r}: its template names none of "
                         f"{[m for _, m in _TEMPLATE_MARKERS]} and its vocabulary and config do not decide; "
                         f"pass family= one of {FAMILIES}")
    return family


def family_spec(family: str, image_token: str = IMAGE_TOKEN) -> TemplateSpec:
    """The ``TemplateSpec`` of ``family`` rendering image parts as ``image_token``."""
    if family not in FAMILY_TEMPLATES:
        raise ValueError(f"unknown chat family {family!r}: use one of {FAMILIES}")
    spec = FAMILY_TEMPLATES[family]
    return spec if image_token == spec.image_token else spec.with_image_token(image_token)


def stop_token_ids(tokenizer: Any, family: str) -> list[int]:
    """Token ids of ``family``'s stop tokens in ``tokenizer``'s vocabulary (error if one is missing)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in family_spec(family).stop_tokens if t not in vocab]
    if missing:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"tokenizer {name!r} has no token {missing} that the {family!r} template ends turns "
                         f"with; pick the family that matches the checkpoint (one of {FAMILIES})")
    return [int(vocab[t]) for t in family_spec(family).stop_tokens]


def attach_template(processor: Any, family: str | None = None, model_config: Any = None,
                    force: bool = False) -> str:
    """Give a processor its family's template when its own has no generation markers.

    The processor's and its tokenizer's ``chat_template`` are both set, so ``apply_chat_template`` on
    either gives assistant masks. A template that already has markers is kept unless ``force``.

    Returns:
        the family name.
    """
    family = family or detect_family(processor, model_config)
    tokenizer = getattr(processor, "tokenizer", processor)
    stop_token_ids(tokenizer, family)
    image_token = getattr(processor, "image_token", None) or IMAGE_TOKEN
    if force or not has_generation_markers(template_text(processor)):
        template = family_spec(family, image_token).chat_template
        processor.chat_template = template
        if tokenizer is not processor:
            tokenizer.chat_template = template
    return family


def require_assistant_tokens(mask: Any, where: str) -> int:
    """Number of assistant tokens in a 0/1 mask; ``AssistantMaskError`` naming ``where`` when it is 0."""
    count = int(sum(int(v) for v in (mask.reshape(-1).tolist() if hasattr(mask, "reshape") else mask)))
    if count == 0:
        raise AssistantMaskError(
            f"{where}: the assistant mask covers no token, so its loss would be zero. The chat template "
            "needs {% generation %}...{% endgeneration %} around assistant replies (brainvlm.model.templates."
            "attach_template gives one) and the sample needs an assistant turn with text")
    return count
