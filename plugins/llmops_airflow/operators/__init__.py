"""Airflow operators of llmops."""
