"""The reference store (llmops.validate.reference_store): one record per (repo, commit, runtime, dtype, flags, golden set),
recorded once even when jobs race for it (real processes), reused by every recipe, refused when it belongs to
another setup. No server: the recording is a slow function standing in for serving the unquantized model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmops.refresh.plan import expand_targets
from llmops.validate.errors import ValidationFailed
from llmops.validate.reference_store import obtain_reference, reference_key, reference_path

GOLDEN = {"prompts": [{"prompt": "a"}, {"prompt": "b"}], "max_new_tokens": 4}


def key(**changes) -> dict:
    values = {"repo_id": "org/m", "sha": "a" * 40, "runtime": "vllm", "runtime_versions": {"vllm": "0.32.0"},
              "flags": {"dtype": "bfloat16", "args": ["--enforce-eager"]}, "golden": GOLDEN, "top_k": 20, **changes}
    return reference_key(**values)


def test_the_key_names_everything_the_reference_depends_on():
    base = reference_path(Path("/r"), key())
    assert reference_path(Path("/r"), key()) == base
    for change in ({"sha": "b" * 40}, {"repo_id": "org/other"}, {"runtime_versions": {"vllm": "0.33.0"}},
                   {"flags": {"dtype": "float32", "args": ["--enforce-eager"]}},
                   {"golden": {"prompts": [{"prompt": "a"}], "max_new_tokens": 4}}, {"top_k": 5}):
        assert reference_path(Path("/r"), key(**change)) != base, change
    # expectations do not change what the model answers
    same = {"prompts": [{"prompt": "a", "expect_substring": "x"}, {"prompt": "b"}], "max_new_tokens": 4}
    assert reference_path(Path("/r"), key(golden=same)) == base


def test_every_recipe_of_one_commit_shares_one_reference_directory(tmp_path):
    from llmops.config import load_registry
    from llmops.config.schema import ModelSpec

    spec = ModelSpec(name="m", repo_id="org/m", validation={"golden_prompts": [{"prompt": "a"}]},
                     targets=[{"recipe": r, "gpu_profiles": ["h20"]} for r in ("llmcompressor-w8a8",
                                                                              "llmcompressor-w4a16")])
    items = expand_targets([spec], {"m": "a" * 40}, load_registry().gpu_profiles, runtime="local",
                           work_root=str(tmp_path)).items
    assert len(items) == 2 and len({i.reference_dir for i in items}) == 1
    assert items[0].reference_dir == f"{tmp_path}/m/{'a' * 40}/references"


def test_a_record_is_reused_and_one_of_another_setup_is_refused(tmp_path):
    calls = []
    record, recorded = obtain_reference(tmp_path, key(), lambda: calls.append(1) or [{"prompt": "a"}])
    again, recorded_again = obtain_reference(tmp_path, key(), lambda: calls.append(1) or [])
    assert (recorded, recorded_again, len(calls)) == (True, False, 1) and again == record
    path = reference_path(tmp_path, key())
    path.write_text(json.dumps({**record, "key": key(sha="c" * 40)}))
    with pytest.raises(ValidationFailed, match="recorded for another source or serving setup.*fix: delete it"):
        obtain_reference(tmp_path, key(), lambda: [])


RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from llmops.validate.reference_store import obtain_reference
    directory, key, log = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
    def record():
        with open(log, "a") as out:
            out.write("recording\\n")
        time.sleep(3)  # serving the unquantized model takes a while: the other job must wait, not record too
        return [{"prompt": "a", "token_ids": [1, 2]}]
    data, recorded = obtain_reference(directory, key, record)
    print(json.dumps({"recorded": recorded, "prompts": data["prompts"]}))
""")


def test_two_jobs_racing_for_one_reference_record_it_once_and_read_the_same(tmp_path):
    """Two processes at the same moment (two recipes' validate jobs): one records while the other waits."""
    log = tmp_path / "calls.log"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "refs"), json.dumps(key()), str(log)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["recorded"] for o in outcomes) == [False, False, True]
    assert log.read_text().count("recording") == 1
    assert all(o["prompts"] == outcomes[0]["prompts"] for o in outcomes)
    assert sorted(p.suffix for p in (tmp_path / "refs").iterdir()) == [".json", ".lock"]  # no partial left
