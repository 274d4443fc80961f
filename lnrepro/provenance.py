"""What made a run: the code, the libraries, the machine and the numerics.

`collect` describes the current process; the trainer appends it to the workdir's
provenance.json each time a run starts or resumes (see `metrics.append_provenance`), so a record
says which commit (and exact source), library versions, device and matmul precision produced
each of its rounds.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from typing import Any, Callable

import jax

from lnrepro import ops

# The libraries whose versions can change a run's numbers or its record.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint",
            "tensorflow-datasets", "ml_collections")
# What a run's float32 rounding depends on besides its config, code and packages. A run resumed
# with one of them changed goes on correctly, but not bit for bit as an uninterrupted run would:
# XLA:CPU, for one, splits its loops and reductions by the number of cores it may use.
NUMERICS_KEYS = ("backend", "device_kind", "device_count", "process_count", "cpus_usable",
                 "xla_flags", "matmul_precision", "layer_norm")
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # lnrepro/: the code that computes
REPO = os.path.dirname(PACKAGE_DIR)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """name -> installed version (None when not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: str = REPO) -> dict[str, Any]:
    """{'commit': full hash or None, 'dirty': tracked files changed since it (None if unknown)}.

    None when the code does not sit in a git checkout (an installed copy) or git is missing.
    """
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                                    timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _source_files(package_dir: str) -> list[str]:
    """The package's .py files, relative to it, in path order: the regular files (or links to
    them) under it; not hidden names (an editor's lock file, `.#train.py`, is a dangling link)
    nor what a linked folder holds."""
    return sorted(os.path.relpath(os.path.join(root, name), package_dir)
                  for root, _, names in os.walk(package_dir)
                  for name in names
                  if name.endswith(".py") and not name.startswith(".")
                  and os.path.isfile(os.path.join(root, name)))


def _digest(package_dir: str, content: Callable[[bytes], bytes]) -> str:
    """sha256 over each source file's path and `content` of its bytes."""
    digest = hashlib.sha256()
    for path in _source_files(package_dir):
        with open(os.path.join(package_dir, path), "rb") as f:
            data = content(f.read())
        # Lengths delimit the fields, so no two different trees hash the same stream.
        for part in (path.replace(os.sep, "/").encode(), data):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def source_digest(package_dir: str = PACKAGE_DIR) -> str:
    """sha256 of the package's Python source, byte for byte.

    It names the code that computed a run's rounds where the commit cannot: a tree with
    uncommitted changes, or a copy outside git.
    """
    return _digest(package_dir, lambda source: source)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with the docstring of its module, classes and functions removed (a body left
    empty becomes `pass`, as the code would have to say)."""
    for node in ast.walk(tree):  # walk queues a node's children before yielding it
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return tree


def _code(source: bytes) -> bytes:
    """What `code_digest` hashes of one file: its syntax tree less docstrings, or, for a file
    that does not parse (a half-made edit, newer syntax), its bytes: it must not stop a run."""
    try:
        return ast.dump(_without_docstrings(ast.parse(source))).encode()
    except (SyntaxError, ValueError):
        return b"unparsed:" + source


def code_digest(package_dir: str = PACKAGE_DIR) -> str:
    """sha256 of what the package's source computes: each file's syntax tree without comments,
    docstrings or layout, so that editing only those does not count as a change of code. Like
    `source_digest`, it reads the files on disk when a run starts, not the modules a
    long-running process imported earlier."""
    return _digest(package_dir, _code)


def source_changed(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the package's code differs between two provenance entries: their code digests
    where both have one from the same Python (ast.dump's text differs between versions), else
    their source digests (False when the earlier entry, from before either was kept, cannot
    say)."""
    if ("code_sha256" in before and "code_sha256" in now
            and _minor(before.get("python")) == _minor(now.get("python"))):
        return before["code_sha256"] != now["code_sha256"]
    return "source_sha256" in before and before["source_sha256"] != now.get("source_sha256")


def _minor(version: str | None) -> str | None:
    """'3.12' from '3.12.7'."""
    return ".".join(version.split(".")[:2]) if version else None


def usable_cpus() -> int | None:
    """How many cores this process may run on (os.cpu_count() where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def numerics_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each of NUMERICS_KEYS and PACKAGES that differs between two
    provenance entries. A key the earlier entry lacks (a record from before it was kept) is
    not compared."""
    changes = [f"{key}: {before[key]!r} -> {now.get(key)!r}" for key in NUMERICS_KEYS
               if key in before and before[key] != now.get(key)]
    old, new = before.get("packages", {}), now.get("packages", {})
    changes += [f"{name}: {old[name]} -> {new.get(name)}" for name in old
                if old[name] != new.get(name)]
    return changes


def collect(matmul_precision: str) -> dict[str, Any]:
    """The provenance of a run started now in this process (call after jax.distributed)."""
    devices = jax.devices()
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **git_state(),
        "source_sha256": source_digest(),
        "code_sha256": code_digest(),  # the source less comments and docstrings
        "python": platform.python_version(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "cpu_count": os.cpu_count(),  # XLA:CPU is one device however many cores it uses
        # The cores this process may run on (fewer than cpu_count under taskset or a cgroup's
        # cpuset) and XLA's flags: both change a CPU run's speed, and either can change its
        # rounding (the core count does: XLA:CPU splits its loops and reductions by it).
        "cpus_usable": usable_cpus(),
        "xla_flags": os.environ.get("XLA_FLAGS") or None,
        "process_count": jax.process_count(),
        "matmul_precision": matmul_precision,
        # Which layer norm ops.layer_norm runs here by default: the fused Pallas kernel on a
        # single GPU (for the shapes it serves), XLA elsewhere. Its float32 rounding differs.
        "layer_norm": ("pallas where it serves the shape, else xla"
                       if ops.layer_norm_implementation((1, 1), jax.numpy.float32, (1,),
                                                        jax.default_backend(),
                                                        len(devices)) == "pallas" else "xla"),
    }
