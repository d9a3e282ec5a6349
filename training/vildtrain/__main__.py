"""Command-line dispatcher: ``python3 -m vildtrain <command> [args...]``.

COMMANDS is the whole list: each command names the module whose
``main(argv) -> int`` runs it, imported only when the command is run (torch
takes seconds to import). ``python3 -m vildtrain <command> --help`` documents
each one.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, what it does), in the order of the pipeline
COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("vildtrain.data.assets", "rasterise the held-out art styles into $VILD_CACHE/art"),
    "categories": ("vildtrain.data.categories", "show the category table, or regenerate it from the npm packages"),
    "scenes": ("vildtrain.data.scenes", "write a COCO set of generated scenes, or time the generator"),
    "coco": ("vildtrain.data.coco", "validate a COCO annotations file"),
    "bpe": ("vildtrain.text.bpe", "train the byte-level BPE tokenizer on the caption corpus"),
    "clip_tokenizer": ("vildtrain.text.clip_tokenizer", "encode text with CLIP's tokenizer, or write golden ids"),
    "train_clip": ("vildtrain.train.train_clip", "train the mini-CLIP"),
    "train_detector": ("vildtrain.train.train_detector", "train the ViLD detector"),
    "train_mask_head": ("vildtrain.train.train_mask_head", "train the class-agnostic mask head on the frozen detector"),
    "infer": ("vildtrain.models.infer", "detect objects in one image with a trained detector"),
    "export": ("vildtrain.export.export", "export a trained detector and its mini-CLIP as a vild bundle"),
    "image_encoder": ("vildtrain.export.image_encoder", "add the mini-CLIP image encoder to a bundle, for exemplar categories"),
    "export_mask_head": ("vildtrain.export.export_mask_head", "add a trained mask head to a vild bundle"),
    "image_temperature": ("vildtrain.export.image_temperature", "set a bundle's image-head temperature and rewrite its golden detections"),
    "crop_scores": ("vildtrain.export.crop_scores", "make a bundle's ensemble consult the teacher on the best regions' crops"),
    "bundle_synonyms": ("vildtrain.export.bundle_synonyms", "rewrite a bundle manifest's category synonyms from the category table"),
    "detector_from_bundle": ("vildtrain.models.detector_from_bundle", "rebuild a bundle's detector as a PyTorch checkpoint"),
    "fixture_bundle": ("vildtrain.export.fixture_bundle", "write the tiny random-weight bundle the Go tests use"),
    "export_reference": ("vildtrain.export.export_reference", "write a reference-size random-weight bundle (R50-FPN, CLIP B/32 text)"),
    "serve_reference": ("vildtrain.export.serve_reference", "time vild serve on a bundle against the embedded default"),
    "convert_clip": ("vildtrain.export.convert_clip", "convert a CLIP checkpoint's text tower and tokenizer (OpenAI or Hugging Face)"),
    "convert_detector": ("vildtrain.export.convert_detector", "convert a torchvision Mask R-CNN R50-FPN state_dict with ViLD heads to the detector graphs"),
    "evaluate": ("vildtrain.evaluate.evaluate", "COCO-style AP of a detector on the held-out scene sets"),
    "diagnose": ("vildtrain.tools.diagnose", "where a detector's accuracy goes: RPN recall, per-head top-1"),
    "bench_torch": ("vildtrain.tools.bench_torch", "time the bundle's detector in PyTorch eager, stage by stage"),
    "kernel_graphs": ("vildtrain.tools.kernel_graphs", "write the ONNX graphs of scoring and of the SGEMM benchmark"),
    "bench_report": ("vildtrain.tools.bench_report", "make bench's Go benchmark results as ratios, JSON and a table"),
    "profile_step": ("vildtrain.tools.profile_step", "where a CPU training step's time goes"),
}


def commands() -> list[str]:
    return list(COMMANDS)


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python3 -m vildtrain <command> [args...]", "", "commands:"]
    lines += [f"  {name:{width}s}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "python3 -m vildtrain <command> --help documents each command."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS and name.replace("-", "_") in COMMANDS:
        name = name.replace("-", "_")   # export-reference is export_reference
    if name not in COMMANDS:
        print(f"vildtrain: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
