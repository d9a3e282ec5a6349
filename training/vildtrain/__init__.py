"""vildtrain: data, models, training, export and evaluation for vild's default model.

Each module with a command-line face exposes ``main(argv: list[str]) -> int``;
``python3 -m vildtrain <module> [args...]`` dispatches to it.
"""
