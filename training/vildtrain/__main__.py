"""Command-line dispatcher: ``python3 -m vildtrain <command> [args...]``.

A command is the name of a module in this package that defines ``main(argv)``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import vildtrain


def commands() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(vildtrain.__path__):
        if info.name.startswith("_"):
            continue
        names.append(info.name)
    return sorted(names)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 -m vildtrain <command> [args...]\ncommands: " + ", ".join(commands()))
        return 0 if argv else 2
    name = argv[0]
    if name not in commands():
        print(f"vildtrain: unknown command {name!r}; commands: {', '.join(commands())}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"vildtrain.{name}")
    if not hasattr(module, "main"):
        print(f"vildtrain: {name} has no command-line entry point", file=sys.stderr)
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
