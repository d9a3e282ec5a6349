import ast
import importlib
import os
import subprocess
import sys

import pytest

from vildtrain.__main__ import COMMANDS, commands, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python3 -m vildtrain ARGS`` as the docs run it: from training/, the package on the path."""
    env = dict(os.environ, PYTHONPATH=".")
    return subprocess.run([sys.executable, "-m", "vildtrain", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_unknown_command_is_an_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage" in out
    assert isinstance(commands(), list)


def test_help_lists_every_command_and_nothing_else(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out.split("commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in listed] == commands() == list(COMMANDS)


def test_without_a_command_it_shows_usage_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_dispatcher_from_the_shell():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python3 -m vildtrain <command>")
    for name in COMMANDS:
        assert f"\n  {name} " in r.stdout
    r = _run("no-such-command")
    assert r.returncode == 2 and "unknown command 'no-such-command'" in r.stderr
    r = _run("coco", "--help")  # a command through the dispatcher, end to end
    assert r.returncode == 0 and r.stdout.startswith("usage: vildtrain coco"), r.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name, capsys):
    """``python3 -m vildtrain NAME --help`` (in this process: torch is imported once)."""
    module = importlib.import_module(COMMANDS[name][0])
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and name in out.splitlines()[0], out


def test_every_module_with_a_main_is_a_command():
    """A module with a command-line entry point is in the table, under the module's name."""
    with_main = set()
    for folder, dirs, files in os.walk(os.path.join(ROOT, "vildtrain")):
        for f in files:
            if not f.endswith(".py") or f.startswith("_"):
                continue
            tree = ast.parse(open(os.path.join(folder, f), encoding="utf-8").read())
            if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
                rel = os.path.relpath(os.path.join(folder, f[:-3]), ROOT)
                with_main.add(rel.replace(os.sep, "."))
    assert with_main == {module for module, _ in COMMANDS.values()}
    assert all(module.rsplit(".", 1)[1] == name for name, (module, _) in COMMANDS.items())
