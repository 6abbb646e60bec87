"""Models: load any LLaVA-family checkpoint, the tiny default, LoRA, chat templates, collation, the pre-flight check."""
