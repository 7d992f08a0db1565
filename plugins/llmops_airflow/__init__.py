"""Airflow glue for llmops: the step factory, hooks, operators, triggers and notifiers.

Imports `llmops` (include/), never the reverse.
"""
