"""Quantization recipes: what each produces, which GPUs can run it, and how it runs."""
