"""Integrations with trainers and launchers: HF Trainer callback, DeepSpeed configs."""
