"""Quantization: run one recipe of the catalogue (`llmops.config.recipes`) on a downloaded checkpoint."""
