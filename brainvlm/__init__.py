"""brainvlm: fine-tune and evaluate LLaVA-family vision-language models on medical images."""

__version__ = "0.1.0"
