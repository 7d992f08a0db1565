"""Command-line entrypoints (`python -m llmops.jobs.<step>`) for heavy steps.

They run inside GPU pods on runtime `kubernetes` and as subprocesses of the worker or serving
environment on runtime `local`. Each prints progress lines and, last, one JSON line with its result
(`LLMOPS_RESULT {...}`) that the step factory returns to XCom.
"""
