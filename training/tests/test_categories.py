import os

import pytest

from vildtrain.data import categories as C

# Changing the vocabulary or its base/novel split must be a deliberate act:
# regenerate with `python3 -m vildtrain categories --write`, then update this pin.
PINNED_SPLIT_CHECKSUM = "2513e9fae5775f34b0d5c8dc87e18f30622c6aa8193b8432742177cf4159c36e"


@pytest.fixture(scope="module")
def cats():
    return C.load_categories()


def test_split_checksum_is_pinned(cats):
    assert C.split_checksum(cats) == PINNED_SPLIT_CHECKSUM


def test_checksum_changes_when_the_split_changes(cats):
    flipped = list(cats)
    c = flipped[0]
    flipped[0] = C.Category(c.id, c.name, c.codepoints, c.synonyms, c.tier,
                            "novel" if c.split == "base" else "base", c.group, c.styles)
    assert C.split_checksum(flipped) != C.split_checksum(cats)


def test_table_shape(cats):
    assert 500 <= len(cats) <= 1000
    assert [c.id for c in cats] == list(range(1, len(cats) + 1))
    names = [c.name for c in cats]
    assert len(set(names)) == len(names)
    assert len({c.key for c in cats}) == len(cats)
    for c in cats:
        assert c.name == c.name.lower().strip() and c.name
        assert c.tier in C.TIERS
        assert c.split == ("novel" if c.tier == "rare" else "base")
        assert c.name not in c.synonyms
        assert len(set(c.synonyms)) == len(c.synonyms)
        assert all(s == s.lower() and s not in names for s in c.synonyms)
        assert {"noto", "twemoji"} <= set(c.styles)


def test_novel_is_about_a_quarter_and_spread_over_groups(cats):
    novel = [c for c in cats if c.split == "novel"]
    assert 0.22 <= len(novel) / len(cats) <= 0.28
    groups = {c.group for c in cats}
    assert groups == {c.group for c in novel}
    assert sorted(C.base_ids(cats) + C.novel_ids(cats)) == [c.id for c in cats]


def test_dropped_near_duplicates_are_absent(cats):
    names = {c.name for c in cats}
    for label in ("one o'clock", "waxing crescent moon", "green book", "magnifying glass tilted right"):
        assert label not in names
    assert "magnifying glass" in names and "poodle" in names and "hot pepper" in names


def test_distractors_are_not_categories(cats):
    ds = C.load_distractors()
    assert len(ds) >= 100
    assert not ({d.key for d in ds} & {c.key for c in cats})
    assert {d.kind for d in ds} == set(C.DISTRACTOR_KINDS)


def test_committed_table_matches_regeneration(cats, cache_dir, tmp_path):
    if not os.path.isdir(os.path.join(cache_dir, "npm", "emojibase-data")):
        pytest.fail("npm packages missing: run scripts/setup.sh")
    built, dropped = C.build_categories(cache_dir)
    assert built == cats
    assert any(reason.startswith("clock face") for _, reason in dropped)
    C.write_tables(built, C.build_distractors(cache_dir), str(tmp_path))
    for name in ("categories.tsv", "distractors.tsv"):
        with open(tmp_path / name, encoding="utf-8") as a, open(os.path.join(C.data_dir(), name), encoding="utf-8") as b:
            assert a.read() == b.read(), name


def test_cli_summary(capsys):
    assert C.main([]) == 0
    assert PINNED_SPLIT_CHECKSUM in capsys.readouterr().out
