"""Canary analysis: probes against OpenAI-compatible endpoints, vLLM metric parsing, the verdict.

The verdict (`verdict.judge`) is a pure function of recorded observations; the probes (`probes`) are
the only code here that talks to servers.
"""
