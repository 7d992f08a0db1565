"""Airflow triggers of llmops."""
