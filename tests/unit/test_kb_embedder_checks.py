"""The embedder checks that run before anything loads: the model name and the dimension, from files alone."""

from __future__ import annotations

import json

import pytest

from llmops.config.schema import KnowledgeBase
from llmops.kb.embedders import LazyEmbedder, offline_problems, planned_dimension
from llmops.kb.errors import DimensionMismatchError, EmbedderError


def _kb(**embedder) -> KnowledgeBase:
    return KnowledgeBase.model_validate({"name": "docs", "alias": "docs", "source": {"uri": "/tmp"},
                                         "embedder": embedder})


def _model_dir(root, pooling: int, dense: int | None = None):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "1_Pooling").mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": pooling}))
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps({"in_features": pooling, "out_features": dense}))
    (root / "config.json").write_text("{}")
    (root / "modules.json").write_text(json.dumps(modules))
    return root


def test_an_unknown_model_name_is_refused_offline_with_the_fix():
    [(key, problem, fix)] = offline_problems(_kb(model="no-such-embedder-model"))
    assert key == "knowledge_bases[docs].embedder.model"
    assert "'no-such-embedder-model' is not a local directory, not a packaged model" in problem
    assert "all-MiniLM-L6-v2" in fix
    with pytest.raises(EmbedderError, match="nothing was loaded"):
        LazyEmbedder(_kb(model="no-such-embedder-model").embedder)


def test_the_dimension_comes_from_the_model_files_and_a_contradiction_is_refused(tmp_path):
    model = _model_dir(tmp_path / "m", pooling=384, dense=256)
    assert planned_dimension(_kb(model=str(model)).embedder) == 256  # the last Dense layer decides
    [(key, problem, fix)] = offline_problems(_kb(model=str(model), dimension=384))
    assert key.endswith(".dimension") and "produces 256-d vectors" in problem and fix == "set dimension: 256 or remove it"
    with pytest.raises(DimensionMismatchError, match="declares dimension 384"):
        planned_dimension(_kb(model=str(model), dimension=384).embedder)
    assert offline_problems(_kb(model="all-MiniLM-L6-v2", dimension=768))[0][1].startswith(
        "model all-MiniLM-L6-v2 produces 384-d vectors")
    assert offline_problems(_kb(model="all-MiniLM-L6-v2")) == []
    # A hub id that is not cached cannot be judged offline: left to the run, which asks the hub first.
    assert offline_problems(_kb(model="some-org/some-model")) == []


def test_a_lazy_embedder_builds_the_model_on_its_first_use_only(tmp_path):
    built, phases = [], []

    class Built:
        kind, model, dimension = "sentence-transformers", "m", 256

        def embed(self, texts):
            return [[0.0] * 256 for _ in texts]

    spec = _kb(model=str(_model_dir(tmp_path / "m", pooling=256))).embedder
    lazy = LazyEmbedder(spec, on_load=phases.append, build=lambda s: built.append(s) or Built())
    assert lazy.planned_dimension == 256 and not lazy.loaded and built == []
    assert len(lazy.embed(["a", "b"])) == 2 and lazy.dimension == 256
    assert built == [spec] and phases == [f"loading the embedder sentence-transformers:{spec.model}"]
