"""Rollout decisions: the canary plan (a pure state machine), pre-flight checks, the report."""
