"""Score `vild detect --format coco` output with the Python evaluation.

    PYTHONPATH=training /usr/bin/python3 eval/testdata/score_results.py \
        RESULTS.json RESULTS.dataset.json ANNOTATIONS.json

Reads the COCO results list and its dataset with plain json (not the Go
readers), maps their ids to the annotation file's by file_name and category
name as `vild eval --results` does, checks the keys COCO readers need, and
prints vildtrain.evaluate.cocoeval's novel/base/all summary as JSON, to compare
with `vild eval --results RESULTS.json --annotations ANNOTATIONS.json --json`.
"""
from __future__ import annotations

import json
import sys

from vildtrain.evaluate.cocoeval import evaluate_detections, summarize


def main(results_path: str, dataset_path: str, annotations_path: str) -> None:
    with open(results_path) as f:
        results = json.load(f)
    with open(dataset_path) as f:
        dataset = json.load(f)
    with open(annotations_path) as f:
        gt = json.load(f)
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score"}, r
    for key in ("info", "licenses", "images", "categories", "annotations"):
        assert key in dataset, key
    assert all(set(im) >= {"id", "file_name", "width", "height"} for im in dataset["images"])
    assert all(set(c) >= {"id", "name", "supercategory"} for c in dataset["categories"])
    assert all(set(a) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
               for a in dataset["annotations"])
    assert len(dataset["annotations"]) == len(results)

    image_by_name = {im["file_name"]: im["id"] for im in gt["images"]}
    category_by_name = {c["name"].lower(): c["id"] for c in gt["categories"]}
    image_ids = {im["id"]: image_by_name.get(im["file_name"]) for im in dataset["images"]}
    category_ids = {c["id"]: category_by_name.get(c["name"].lower()) for c in dataset["categories"]}
    gts: dict[int, list] = {}
    for a in gt["annotations"]:
        gts.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"]))
    dts: dict[int, list] = {}
    for r in results:
        image, category = image_ids[r["image_id"]], category_ids[r["category_id"]]
        if image is not None and category is not None:
            dts.setdefault(image, []).append((category, r["bbox"], r["score"]))
    ids = [c["id"] for c in gt["categories"]]
    ap = evaluate_detections(gts, dts, ids)
    groups = {s: [c["id"] for c in gt["categories"] if c.get("split") == s] for s in ("novel", "base")}
    groups["all"] = ids
    print(json.dumps(summarize(ap, groups)))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
