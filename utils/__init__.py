"""Reusable pieces shared by the scripts at the repository root (finetune, infer, generate, ...)."""
