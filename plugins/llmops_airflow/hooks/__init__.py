"""Airflow hooks of llmops."""
