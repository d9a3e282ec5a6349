"""Rewrite a bundle manifest's category synonyms from the category table.

The exporter writes ``manifest.categories`` from ``training/data/categories.tsv``
(name, split, synonyms). When only the synonyms of the table change (docs/data.md,
"Synonyms"), a bundle need not be re-exported: its graphs, embeddings and golden
outputs depend on the category names and splits alone. This command checks that
the manifest lists exactly the table's categories (same names, same order, same
splits) and replaces each category's ``synonyms``, nothing else:

    cd training && python3 -m vildtrain bundle_synonyms --bundle ../models/default

``--check`` only reports whether the manifest's synonyms are the table's (exit 1
when not). The manifest's ``sha256`` entries cover the other files of the bundle,
which are untouched, so they stay valid; the bundle's digest (the SHA-256 of
manifest.json) and so the served model id change.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence


def manifest_categories(categories: Sequence) -> list[dict]:
    """``manifest.categories``: name, split and synonyms (absent when none), in table order."""
    return [{"name": c.name, "split": c.split, **({"synonyms": list(c.synonyms)} if c.synonyms else {})}
            for c in categories]


def manifest_text(man: dict, default=None) -> str:
    """manifest.json's text as the exporter writes it."""
    return json.dumps(man, indent=1, ensure_ascii=False, default=default) + "\n"


def _read(bundle: str) -> tuple[str, dict]:
    path = os.path.join(bundle, "manifest.json")
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    return raw, json.loads(raw)


def _check_categories(man: dict, categories: Sequence) -> None:
    have = [(c.get("name"), c.get("split")) for c in man.get("categories", [])]
    want = [(c.name, c.split) for c in categories]
    if have != want:
        diff = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
        raise ValueError(f"bundle_synonyms: the manifest's categories are not the table's (same names, order and "
                         f"splits are required; first difference at index {diff}, {len(have)} against "
                         f"{len(want)} categories): re-export the bundle instead")


def synonyms_differ(bundle: str, categories: Sequence) -> list[str]:
    """Names of the categories whose manifest synonyms are not the table's."""
    _, man = _read(bundle)
    _check_categories(man, categories)
    return [c.name for c, m in zip(categories, man["categories"]) if m.get("synonyms", []) != list(c.synonyms)]


def update_synonyms(bundle: str, categories: Sequence) -> list[str]:
    """Rewrite ``bundle``/manifest.json with the table's synonyms; returns the names of
    the categories whose synonyms changed (the file is left alone when none did)."""
    raw, man = _read(bundle)
    _check_categories(man, categories)
    if manifest_text(man) != raw:
        raise ValueError("bundle_synonyms: manifest.json is not laid out as the exporter writes it; "
                         "rewriting it would change more than the synonyms")
    changed = [c.name for c, m in zip(categories, man["categories"]) if m.get("synonyms", []) != list(c.synonyms)]
    if changed:
        man["categories"] = manifest_categories(categories)
        with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(manifest_text(man))
    return changed


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain bundle_synonyms", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="bundle directory (e.g. ../models/default)")
    ap.add_argument("--categories", default=None, help="categories.tsv (default: training/data/categories.tsv)")
    ap.add_argument("--check", action="store_true", help="only report whether the synonyms are the table's")
    args = ap.parse_args(argv)
    from vildtrain.data.categories import load_categories
    cats = load_categories(args.categories)
    try:
        if args.check:
            differ = synonyms_differ(args.bundle, cats)
            if differ:
                print(f"bundle_synonyms: {len(differ)} categories' synonyms differ from the table "
                      f"(first: {', '.join(differ[:5])})", file=sys.stderr)
                return 1
            print(f"bundle_synonyms: {args.bundle}: the synonyms are the table's", file=sys.stderr)
            return 0
        changed = update_synonyms(args.bundle, cats)
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    n = sum(len(c.synonyms) for c in cats)
    print(f"bundle_synonyms: {args.bundle}: synonyms of {len(changed)} categories rewritten "
          f"({n} synonyms on {sum(bool(c.synonyms) for c in cats)} of {len(cats)} categories)", file=sys.stderr)
    return 0
