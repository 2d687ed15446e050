"""Stage 2: datasets from the rollback trees, LoRA/QLoRA training, adapter export (imports torch lazily)."""
