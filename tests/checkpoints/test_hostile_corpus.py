"""The hostile-file corpus, run as an attacker would: each file through ``sgtriton.load`` and the
``convert`` command in one child process under an address-space limit.

Every hostile file must give one clean one-line ``CheckpointError`` naming it, within seconds and
well under the limit, with no output written; the valid files loaded afterwards in the same
process prove no load poisoned another.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_corpus import cases, valid_files, write

#: Address space the child may add after warming up (the corpus must stay far below it).
EXTRA_ADDRESS_SPACE = 3 << 29  # 1.5 GiB
#: Seconds one file may take to be refused (load or convert), on a busy 2-core machine.
CASE_SECONDS = 5.0
#: Resident memory one refusal may add.
CASE_MIB = 256


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    manifest = [dict(m, kind="hostile") for m in write(str(folder), cases())]
    manifest += [dict(m, kind="valid") for m in write(str(folder), valid_files())]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    child = Path(__file__).with_name("hostile_child.py")
    env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", PYTHONPATH=str(child.parent))
    proc = subprocess.run([sys.executable, str(child), str(folder), str(folder / "manifest.json"),
                           str(EXTRA_ADDRESS_SPACE)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["file"] for r in results] == [m["file"] for m in manifest], proc.stderr[-3000:]
    return results


def test_every_hostile_file_is_one_clean_error(corpus_results):
    hostile = [r for r in corpus_results if r["kind"] == "hostile"]
    assert len(hostile) >= 45
    problems = []
    for r in hostile:
        if r["outcome"] != "error":
            problems.append(f"{r['name']}: {r['outcome']} {r.get('message', '')}")
        elif r["file"] not in r["message"] or "\n" in r["message"] or "MemoryError" in r["message"]:
            problems.append(f"{r['name']}: message does not name the file on one line: {r['message'][:200]}")
        if r["convert_exit"] == 0 or r["convert_exception"] is not None:
            problems.append(f"{r['name']}: convert exit {r['convert_exit']}, {r['convert_exception']}")
        elif [line for line in r["convert_output"].splitlines() if line.strip()] != \
                [line for line in r["convert_output"].splitlines() if line.startswith("Error: ")]:
            problems.append(f"{r['name']}: convert printed more than one error line: {r['convert_output'][:300]}")
        if r["left_files"]:
            problems.append(f"{r['name']}: convert left {r['left_files']}")
    assert not problems, "\n".join(problems)


def test_every_refusal_is_fast_and_small(corpus_results):
    slow = [(r["name"], round(r["load_s"], 2), round(r["convert_s"], 2), round(r["peak_mib"]))
            for r in corpus_results if r["kind"] == "hostile"
            and (r["load_s"] > CASE_SECONDS or r["convert_s"] > CASE_SECONDS or r["peak_mib"] > CASE_MIB)]
    assert not slow, slow


def test_later_loads_are_unaffected(corpus_results):
    valid = [r for r in corpus_results if r["kind"] == "valid"]
    assert len(valid) == 5
    assert all(r["outcome"] == "loaded" and r["convert_exit"] == 0 for r in valid), valid
    assert all(r["left_files"] == ["converted.safetensors"] for r in valid)


@pytest.mark.parametrize("name", ["tensor BUILD grows storage (memory disclosure)",
                                  "BUILD on torch.FloatStorage marker in a .pt",
                                  "BUILD on torch.FloatStorage marker in an inner storage blob"])
def test_the_reported_holes_are_closed_by_construction(corpus_results, name):
    (record,) = [r for r in corpus_results if r["name"] == name]
    assert "BUILD" in record["message"] and "refused" in record["message"]
