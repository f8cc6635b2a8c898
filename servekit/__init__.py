"""Build-time tools: train demo models, export and validate, write model configs, drive TorchServe."""
