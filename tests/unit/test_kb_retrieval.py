"""Hybrid retrieval, without a server: the registry's `retrieval` block is validated with the fix named, the
server-version rule that refuses a Milvus without BM25, and the fingerprint that makes a switch to hybrid
rebuild while leaving dense knowledge bases' collections alone. (Building and searching: tests/integration/kb.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from llmops.config import load_registry
from llmops.errors import ConfigError
from llmops.kb.index import bm25_supported
from llmops.kb.plan import BM25_FIELD, config_fingerprint

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config"


def registry_with(tmp_path: Path, retrieval: dict | None):
    config = tmp_path / "config"
    shutil.copytree(SHIPPED, config)
    path = config / "knowledge_bases.yaml"
    data = yaml.safe_load(path.read_text())
    if retrieval is not None:
        data["knowledge_bases"][0]["retrieval"] = retrieval
    path.write_text(yaml.safe_dump(data))
    return load_registry(config)


def kb_of(tmp_path, retrieval):
    return next(iter(registry_with(tmp_path, retrieval).knowledge_bases.values()))


def test_dense_is_the_default_and_hybrid_takes_either_ranker(tmp_path):
    assert kb_of(tmp_path / "a", None).retrieval.mode == "dense"
    rrf = kb_of(tmp_path / "b", {"mode": "hybrid", "rrf_k": 20}).retrieval
    assert (rrf.mode, rrf.ranker, rrf.rrf_k) == ("hybrid", "rrf", 20)
    weighted = kb_of(tmp_path / "c", {"mode": "hybrid", "ranker": "weighted", "dense_weight": 0.7}).retrieval
    assert (weighted.ranker, weighted.dense_weight) == ("weighted", 0.7)
    # defaults written out (as model_dump() writes them) are no mistake
    assert kb_of(tmp_path / "d", {"mode": "dense", "ranker": "rrf", "rrf_k": 60, "dense_weight": 0.5}).retrieval.mode \
        == "dense"
    assert type(weighted).model_validate(weighted.model_dump()) == weighted


@pytest.mark.parametrize(("retrieval", "words"), [
    ({"mode": "bm25"}, "'dense' or 'hybrid'"),
    ({"ranker": "weighted"}, "mode is 'dense', but ranker (options of mode 'hybrid') set"),
    ({"mode": "hybrid", "dense_weight": 0.3}, "dense_weight applies to ranker 'weighted' only"),
    ({"mode": "hybrid", "ranker": "weighted", "rrf_k": 10}, "rrf_k applies to ranker 'rrf' only"),
    ({"mode": "hybrid", "ranker": "weighted", "dense_weight": 1.5}, "less than or equal to 1"),
    ({"mode": "hybrid", "rrf_k": 0}, "greater than or equal to 1"),
    ({"mode": "hybrid", "fusion": "rrf"}, "knowledge_bases[product-docs].retrieval.fusion"),
])
def test_a_bad_retrieval_block_names_the_key_and_the_fix(tmp_path, retrieval, words):
    with pytest.raises(ConfigError) as err:
        registry_with(tmp_path, retrieval)
    text = str(err.value)
    assert "knowledge_bases.yaml" in text and "knowledge_bases[product-docs].retrieval" in text
    assert words in text and "fix:" in text, text


@pytest.mark.parametrize(("version", "supported"), [
    ("milvus_lite-3.2.2", True),   # what pymilvus 3 + milvus-lite report (BM25 checked by the integration tests)
    ("milvus_lite-2.5.1", False),  # the older C++-core Lite generation is not counted on
    ("v2.3.5-lite", False),        # the `milvus` package's standalone server: no sparse vectors, no BM25
    ("v2.4.15", False),
    ("v2.5.0", True),
    ("v2.6.4", True),              # docker-compose.yaml's and the ACK chart's server
    ("2.5.3", True),
    ("Zilliz Cloud Vector Database", None),  # unreadable: the server decides
])
def test_bm25_support_by_server_version(version, supported):
    assert bm25_supported(version) is supported


def test_switching_to_hybrid_changes_the_fingerprint_and_dense_keeps_its_own(tmp_path):
    dense = config_fingerprint(kb_of(tmp_path / "a", None))
    hybrid = config_fingerprint(kb_of(tmp_path / "b", {"mode": "hybrid"}))
    weighted = config_fingerprint(kb_of(tmp_path / "c", {"mode": "hybrid", "ranker": "weighted"}))
    # dense collections built before `retrieval` existed are not rebuilt for it
    assert set(dense) == {"schema", "embedder", "chunking"}
    assert hybrid == {**dense, "bm25": hybrid["bm25"]} and hybrid["bm25"]["field"] == BM25_FIELD
    assert weighted == hybrid  # the ranker is a search-time choice: no rebuild
