"""vildtrain: data, models, training, export and evaluation for vild's default model.

One subpackage per job, each depending only on those listed before it:

* ``data``: the asset cache, categories, emoji art, generated scenes, COCO files;
* ``text``: prompt templates, the CLIP tokenizer and its BPE trainer;
* ``models``: the mini-CLIP, the detector, its RoI pooler, losses and inference;
* ``train``: the mini-CLIP and detector trainers;
* ``export``: the vild bundle and the Go tests' fixture bundle;
* ``evaluate``: COCO-style AP on the held-out scene sets;
* ``tools``: diagnostics (where accuracy and step time go).

``python3 -m vildtrain <command> [args...]`` runs a command; ``vildtrain.__main__.COMMANDS``
lists them.
"""
