"""Every `vqt` command's --help shows an example; --version; shell completion scripts that complete."""

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, vqt

import vqtoolkit
from vqtoolkit.cli import cli


def all_commands(group: click.Group, path=()):
    """(command path, command) for every command and subcommand, groups included."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


def plugin_cli():
    """The `vqt` group as `vqt` itself builds it: with the commands plugins register."""
    from vqtoolkit.plugins import load_plugins, pm

    load_plugins()
    pm.hook.register_commands(cli=cli)
    return cli


def test_every_help_has_an_example():
    group = plugin_cli()
    commands = list(all_commands(group))
    names = {path[0] for path, _ in commands}
    assert {"train", "tokenize", "decode", "report", "info", "export", "completion"} <= names
    runner = CliRunner()
    missing = []
    for path, _ in [((), group), *commands]:
        result = runner.invoke(group, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Example" not in result.output:
            missing.append(" ".join(path) or "vqt")
    assert not missing, f"--help without an example: {missing}"


def test_version():
    result = vqt("--version")
    assert result.returncode == 0 and result.stdout == f"vqt, version {vqtoolkit.__version__}\n"


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F"),
        ("zsh", "#compdef vqt"),
        ("fish", "complete --no-files --command vqt"),
    ],
)
def test_completion_scripts(shell, marker):
    result = vqt("completion", shell)
    assert result.returncode == 0 and marker in result.stdout and "_VQT_COMPLETE" in result.stdout


def test_completion_completes_commands_and_options():
    """What the bash script asks `vqt` for when TAB is pressed, answered by the real program."""
    env = {**os.environ, "_VQT_COMPLETE": "bash_complete", "COMP_WORDS": "vqt re", "COMP_CWORD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "vqtoolkit"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,report"]
    # every TAB runs vqt: answering must not pay for importing torch (the built-in plugins need it)
    probe = (
        "import sys, runpy\n"
        "try: runpy.run_module('vqtoolkit', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert imported.stdout.split() == ["plain,report"] and imported.stderr.strip() == "False", imported.stderr

    from click.shell_completion import BashComplete

    complete = BashComplete(cli, {}, "vqt", "_VQT_COMPLETE")
    assert "--json" in [item.value for item in complete.get_completions(["info"], "--")]
    assert [item.value for item in complete.get_completions(["completion"], "f")] == ["fish"]
    assert vqt("completion", "tcsh").returncode == 2  # click names the choices
