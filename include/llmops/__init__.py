"""llmops: the domain library behind the model_refresh, model_rollout and kb_reindex DAGs.

Plain typed Python. Nothing in this package imports Airflow (tests/unit/test_layers.py enforces
it), so the same code runs in an Airflow worker, in a GPU pod and in a notebook.
"""

__version__ = "0.1.0"
