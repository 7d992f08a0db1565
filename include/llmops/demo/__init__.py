"""What the demo scripts and the benches make for themselves, so nothing is fetched from a hub.

    tiny_model.py   a tiny trained Llama (worker environment; `python -m llmops.jobs.make_tiny_model`)
    rollout.py      scripts/demo_model_rollout.sh's helpers: versions to roll out, stop, newest report
"""
