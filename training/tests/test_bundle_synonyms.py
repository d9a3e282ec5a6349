import hashlib
import json
import os

import pytest

from vildtrain.data.categories import load_categories
from vildtrain.export import bundle_synonyms as bs
from vildtrain.paths import REPO_DIR

DEFAULT = os.path.join(REPO_DIR, "models", "default")


@pytest.fixture(scope="module")
def cats():
    return load_categories()


def _manifest(path):
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def test_committed_bundle_carries_the_tables_synonyms(cats):
    """models/default was rewritten with `bundle_synonyms` after the synonyms were
    curated; its names, order and splits are the table's."""
    assert bs.synonyms_differ(DEFAULT, cats) == []
    man = _manifest(DEFAULT)
    by = {c["name"]: c.get("synonyms", []) for c in man["categories"]}
    assert not {"curious", "sly"} & set(by["raccoon"])
    assert not {"alpha", "order", "strong"} & set(by["lion"])
    assert "kitten" in by["cat"] and "bunny" in by["rabbit"] and "lion face" in by["lion"]


def test_committed_bundle_files_match_their_sha256(cats):
    man = _manifest(DEFAULT)
    for rel, want in man["sha256"].items():
        with open(os.path.join(DEFAULT, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want, rel


def _bundle(tmp_path, cats, synonyms=None, **change):
    """A manifest.json laid out as the exporter writes it, with other synonyms."""
    man = {"format": "vild-bundle/1", "name": "t",
           "categories": [{"name": c.name, "split": c.split,
                           **({"synonyms": synonyms(c)} if synonyms and synonyms(c) else {})} for c in cats],
           "training": {"seed": 0}, "sha256": {"a.npy": "00"}}
    man.update(change)
    (tmp_path / "manifest.json").write_text(bs.manifest_text(man), encoding="utf-8")
    return man


def test_update_rewrites_only_the_synonyms(tmp_path, cats):
    old = _bundle(tmp_path, cats, synonyms=lambda c: list(c.synonyms + c.tags))
    assert bs.synonyms_differ(str(tmp_path), cats)
    changed = bs.update_synonyms(str(tmp_path), cats)
    assert len(changed) == sum(bool(c.tags) for c in cats)
    new = _manifest(tmp_path)
    assert {k: v for k, v in new.items() if k != "categories"} == {k: v for k, v in old.items() if k != "categories"}
    assert list(new) == list(old)
    assert new["categories"] == bs.manifest_categories(cats)
    assert bs.synonyms_differ(str(tmp_path), cats) == []
    before = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert bs.update_synonyms(str(tmp_path), cats) == []          # nothing to do: not rewritten
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == before


def test_update_refuses_other_categories(tmp_path, cats):
    c = cats[0]
    flipped = [type(c)(c.id, c.name, c.codepoints, c.synonyms, c.tier, "novel" if c.split == "base" else "base",
                       c.group, c.styles, c.tags), *cats[1:]]
    _bundle(tmp_path, flipped)
    with pytest.raises(ValueError, match="same names, order and splits"):
        bs.update_synonyms(str(tmp_path), cats)
    _bundle(tmp_path, cats[:-1])
    with pytest.raises(ValueError, match="re-export"):
        bs.synonyms_differ(str(tmp_path), cats)


def test_update_refuses_a_manifest_in_another_layout(tmp_path, cats):
    man = _bundle(tmp_path, cats, synonyms=lambda c: list(c.tags))
    (tmp_path / "manifest.json").write_text(json.dumps(man), encoding="utf-8")
    with pytest.raises(ValueError, match="laid out as the exporter"):
        bs.update_synonyms(str(tmp_path), cats)


def test_command(tmp_path, cats, capsys):
    _bundle(tmp_path, cats, synonyms=lambda c: list(c.tags))
    assert bs.main(["--bundle", str(tmp_path), "--check"]) == 1
    assert bs.main(["--bundle", str(tmp_path)]) == 0
    assert bs.main(["--bundle", str(tmp_path), "--check"]) == 0
    assert bs.main(["--bundle", str(tmp_path / "missing")]) == 1
    assert "synonyms" in capsys.readouterr().err
