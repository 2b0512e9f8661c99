"""The manifest: network identity, journal parts, refusal of a different job, file checks."""

import json
import os

import pytest
from generation_helpers import small_generator

import sgtriton
from sgtriton.generation import manifest


def test_network_identity_follows_the_weights_not_the_file(tmp_path):
    G = small_generator()
    sgtriton.save(G, tmp_path / "g.safetensors")
    same = manifest.network_identity(sgtriton.load(tmp_path / "g.safetensors"))
    assert same == manifest.network_identity(G)
    G.synthesis.b4.conv1.bias.data[0] += 1e-6
    assert manifest.network_identity(G)["sha256"] != same["sha256"]


def test_parts_override_the_whole_manifest_and_are_folded_into_it(tmp_path):
    header = manifest.make_header({"sha256": "n"}, {"seeds": "0-2"})
    manifest.start_job(tmp_path, header, fresh=True)
    manifest.write_part(tmp_path, 0, [manifest.entry(0, "seed0000.png", "aa", (2, 2, 3))])
    manifest.write_part(tmp_path, 1, [manifest.entry(1, "seed0001.png", "bb", (2, 2, 3))])
    found, entries = manifest.read_manifest(tmp_path)
    assert found == header and sorted(entries) == [0, 1]
    manifest.finish_job(tmp_path, header, [entries[0], entries[1]])
    assert not (tmp_path / manifest.PARTS_NAME).exists()
    lines = [json.loads(line) for line in (tmp_path / manifest.MANIFEST_NAME).read_text().splitlines()]
    assert lines[0] == header and [e["sha256"] for e in lines[1:]] == ["aa", "bb"]
    manifest.start_job(tmp_path, header, fresh=False)  # resuming: a newer part wins over the old line
    manifest.write_part(tmp_path, 0, [manifest.entry(0, "seed0000.png", "cc", (2, 2, 3))])
    assert manifest.read_manifest(tmp_path)[1][0]["sha256"] == "cc"


def test_a_different_job_is_refused_naming_every_difference(tmp_path):
    recorded = manifest.make_header({"sha256": "aaa"}, {"truncation_psi": 0.7, "format": "png"})
    wanted = manifest.make_header({"sha256": "bbb"}, {"truncation_psi": 0.5, "format": "png"})
    with pytest.raises(manifest.ManifestError) as info:
        manifest.check_same_job(tmp_path, recorded, wanted)
    message = str(info.value)
    assert "network sha256: recorded 'aaa', this run 'bbb'" in message
    assert "truncation_psi: recorded 0.7, this run 0.5" in message and "format" not in message
    manifest.check_same_job(tmp_path, recorded, recorded)


def test_a_broken_manifest_line_is_reported_with_its_place(tmp_path):
    (tmp_path / manifest.MANIFEST_NAME).write_text('{"manifest": 1}\nnot json\n')
    with pytest.raises(manifest.ManifestError, match=r"manifest.jsonl:2"):
        manifest.read_manifest(tmp_path)


def test_file_matches_only_the_recorded_regular_file(tmp_path):
    (tmp_path / "seed0000.png").write_bytes(b"pixels")
    good = manifest.entry(0, "seed0000.png", manifest.hashlib.sha256(b"pixels").hexdigest(), (1, 1, 1))
    assert manifest.file_matches(tmp_path, good, "seed0000.png")
    assert not manifest.file_matches(tmp_path, good, "seed0001.png")  # entry for another file
    assert not manifest.file_matches(tmp_path, None, "seed0000.png")
    (tmp_path / "real.png").write_bytes(b"pixels")
    (tmp_path / "seed0000.png").unlink()
    os.symlink(tmp_path / "real.png", tmp_path / "seed0000.png")  # right bytes, but a link: regenerate
    assert not manifest.file_matches(tmp_path, good, "seed0000.png")


def test_a_planted_link_in_place_of_the_parts_folder_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / manifest.PARTS_NAME)
    manifest.start_job(out, manifest.make_header({}, {}), fresh=False)
    assert not (out / manifest.PARTS_NAME).is_symlink() and list(elsewhere.iterdir()) == []


def test_temporaries_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    for name in (".seed0001.png.abc123.tmp", ".manifest.jsonl.x.tmp", ".other.tmp", "seed0002.png"):
        (tmp_path / name).write_bytes(b"x")
    manifest.start_job(tmp_path, manifest.make_header({}, {}), fresh=True, file_prefix="seed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp", manifest.PARTS_NAME, "seed0002.png"]
