"""The README as a user reads it: every command runs as pasted, the library snippet runs, and
the numbers in its prose come from the generated tables.

Each `python -m` command is run exactly as written, as its module's `__main__`, with absl's
`app.run` replaced by a parse-only stand-in: every flag is parsed (an unknown or misspelled flag,
or a bad value, fails), `--config` files load with their arguments, and then it exits 0 without
calling `main`, so nothing trains. (absl's own `--help` would not do: it exits 1, and it prints
the help even when another flag is unknown.)
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "README.md")) as _f:
    README = _f.read()
PYTHONS = (".venv/bin/python", ".venv-cuda12/bin/python", ".venv-cuda13/bin/python")
# Shell variables the README's loops and job arrays set.
SHELL_VARIABLES = {"$i": "0", "$SLURM_ARRAY_TASK_ID": "0", "$SLURM_ARRAY_TASK_COUNT": "2"}


def generated_blocks(text: str) -> list[str]:
    return re.findall(r"<!-- ([\w ]+) -->\n(.*?)<!-- /\1 -->", text, re.DOTALL)


def prose(text: str) -> str:
    """The README without its generated blocks and code blocks."""
    text = re.sub(r"<!-- ([\w ]+) -->\n.*?<!-- /\1 -->", "", text, flags=re.DOTALL)
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def python_commands(text: str) -> list[str]:
    """Every `<venv python> -m module ...` command in code blocks and inline code, with line
    continuations joined and shell variables filled in."""
    code = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
    code += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    commands = []
    for block in code:
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            for python in PYTHONS:
                for match in re.finditer(re.escape(python) + r" -m [^&;|#]*", line):
                    command = match.group(0).strip()
                    for name, value in SHELL_VARIABLES.items():
                        command = command.replace(name, value)
                    commands.append(command)
    return list(dict.fromkeys(commands))


COMMANDS = python_commands(README)


def test_the_readme_shows_commands_for_every_entry_point():
    modules = {shlex.split(c)[2] for c in COMMANDS}
    expected = {"experiments.pi_mnist", "experiments.attentive_reader", "experiments.sweep",
                "experiments.prepare_data", "scripts.reproduce", "scripts.update_results",
                "scripts.invariance_table", "scripts.benchmark_ops", "scripts.benchmark_train",
                "scripts.benchmark_reader", "scripts.benchmark_members",
                "scripts.benchmark_processes",
                "scripts.init_gradients"}
    assert expected <= modules, expected - modules
    assert not re.search(r"(?<![\w/.-])python3? -m ", prose(README)), \
        "a bare `python -m` fails when pasted without the venv: write .venv/bin/python"


PARSE_ONLY = """
import runpy, sys
from absl import app, flags

def parse_only(main, argv=None, **kwargs):
    flags.FLAGS(sys.argv)  # raises on an unknown flag or a bad value; loads --config files
    print("parsed:", " ".join(sorted(f for f in flags.FLAGS if flags.FLAGS[f].present)))
    sys.exit(0)

app.run = parse_only
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _parse_only(command: str) -> subprocess.CompletedProcess:
    _, _, module, *args = shlex.split(command)
    return subprocess.run([sys.executable, "-c", PARSE_ONLY, module, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def parsed() -> dict[str, subprocess.CompletedProcess]:
    """Every command's parse-only run, one per core at a time (each is a fresh interpreter
    that imports jax)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(COMMANDS, pool.map(_parse_only, COMMANDS)))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses_as_pasted(command, parsed):
    _, _, module, *args = shlex.split(command)
    result = parsed[command]
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    passed = {a.split("=")[0].lstrip("-").split(".")[0] for a in args if a.startswith("--")}
    assert passed <= set(result.stdout.split()[1:]), (command, result.stdout)


def test_a_misspelled_flag_fails_the_parse_check():
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY, "scripts.invariance_table",
                             "--sed=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "sed" in result.stderr


def test_the_library_snippet_runs():
    snippet = re.search(r"## Using the library\n.*?```python\n(.*?)```", README, re.DOTALL)
    assert snippet, "README.md has no library snippet"
    namespace: dict = {}
    exec(compile(snippet.group(1), "README snippet", "exec"), namespace)  # noqa: S102


def test_numbers_in_the_prose_come_from_the_generated_tables():
    """A percentage or ratio written by hand in the results prose must appear in a generated
    block (tables rebuilt from the records), so prose and records cannot drift apart."""
    results = README.split("## Results", 1)[1].split("\n## Experiments", 1)[0]
    generated = " ".join(body for _, body in generated_blocks(README))
    numbers = set(re.findall(r"(?<![\w.])(\d+\.\d+)(?=%| points| ±|x\b)", prose(results)))
    missing = sorted(n for n in numbers if n not in generated)
    assert not missing, f"numbers in the Results prose that no generated table shows: {missing}"
