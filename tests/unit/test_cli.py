"""The ``pgbackups`` command line: every subcommand registered, each with an example in
its ``--help``, and ``--help`` fast (the runtime is imported only when a command runs)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pgbackups.local.cli.main import build_parser, main

COMMANDS = {
    "up",
    "status",
    "down",
    "add-unit",
    "remove-unit",
    "switchover",
    "psql",
    "s3",
    "run",
    "retention",
    "schedule",
    "leader",
    "logs",
    "leftovers",
    "metrics",
    "tls",
    "demo",
    "agent",
}
VERBS = {
    "s3": {"set", "unset", "show"},
    "tls": {"enable", "disable"},
    "leftovers": {"remove"},
    "retention": {"set", "show", "unset"},
    "schedule": {"set", "show", "unset"},
}
# What `pgbackups --help` must not import: the runtime and what it drags in.
HEAVY = ("psycopg", "boto3", "botocore", "yaml", "pgbackups.local.runtime", "pgbackups.adapters.s3")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p for action in actions for name, p in action.choices.items()}


def leaf_commands() -> list[tuple[str, ...]]:
    top = subcommands(build_parser())
    leaves: list[tuple[str, ...]] = []
    for name, parser in sorted(top.items()):
        verbs = subcommands(parser)
        leaves += [(name, verb) for verb in sorted(verbs)] or [(name,)]
    return leaves


def test_every_command_group_registers_its_subcommands() -> None:
    top = subcommands(build_parser())
    assert set(top) == COMMANDS
    for name, verbs in VERBS.items():
        assert set(subcommands(top[name])) == verbs


@pytest.mark.parametrize("argv", leaf_commands(), ids=" ".join)
def test_each_subcommand_has_help_with_an_example(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    example = text.split("\nexample:\n", 1)[1]
    assert example.startswith(f"  pgbackups {argv[0]}")


def test_each_subcommand_runs_a_function() -> None:
    for argv in leaf_commands():
        args = [*argv, "main/0"] if argv[0] in ("remove-unit", "switchover", "psql") else argv
        if argv[0] == "run":
            args = ["run", "main/0", "list-backups"]
        if argv == ("leftovers", "remove"):
            args = ["leftovers", "remove", "main/0", "data.failed"]
        assert callable(build_parser().parse_args(args).func)


def test_help_imports_no_runtime() -> None:
    probe = (
        "import sys\n"
        "from pgbackups.local.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.split("\n")
    assert "pgbackups.local.cli.main" in loaded  # the probe did import the CLI
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def _fails_on_a_full_disk(_args: argparse.Namespace) -> int:
    raise OSError(28, "No space left on device", "/var/lib/pgbackups/clusters/main/patroni.yml")


def test_an_os_error_escaping_a_command_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgbackups.local.cli.main import run_command

    assert run_command(_fails_on_a_full_disk, argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert err == ("error: /var/lib/pgbackups/clusters/main/patroni.yml: No space left on device\n")
    assert run_command(_fails_on_a_full_disk, argparse.Namespace(), verbose=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):"), "-v shows where"
    assert err.endswith(
        "error: /var/lib/pgbackups/clusters/main/patroni.yml: No space left on device\n"
    )


def test_the_command_exits_with_what_a_normal_exit_would_have_done(tmp_path: Path) -> None:
    """``entry`` skips the interpreter's teardown, not what the teardown is for: other
    threads end, atexit functions and logging's handlers run, buffered output arrives,
    and the status is main's."""
    probe = (
        "import atexit, logging, sys, threading, time\n"
        "from pathlib import Path\n"
        "from pgbackups.local.cli import main as cli\n"
        "out = Path(sys.argv[1])\n"
        "def slow():\n"
        "    time.sleep(0.3)\n"
        "    (out / 'thread').write_text('done')\n"
        "def fake_main():\n"
        "    handler = logging.FileHandler(out / 'log')\n"
        "    logging.getLogger('probe').addHandler(handler)\n"
        "    logging.getLogger('probe').warning('logged')\n"
        "    atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        "    threading.Thread(target=slow).start()\n"
        "    sys.stdout.write('x' * 200000)\n"
        "    return 3\n"
        "cli.main = fake_main\n"
        "cli.entry()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout == "x" * 200000
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "log").read_text() == "logged\n"
