"""What code a run was trained with: a fingerprint of the source that trains.

Every child run carries it (tag ``nfstudy.code``), with the git commit and whether the work
tree had uncommitted changes, for information. A FINISHED run whose fingerprint differs
from the running code's is *stale*: ``nfstudy run`` never reuses it silently (see the
README, "How the cache decides what is the same run").

The fingerprint covers :data:`TRAINING_SOURCES`, the code that computes a run's numbers,
and only what can change them: comments, docstrings, blank lines and trailing spaces are
left out, so rewording a docstring keeps every run fresh, while any change to a statement
makes them stale (even one that happens not to move a number: the fingerprint cannot
tell). The CLI, the report, the queue and the tracking code are not in it. The source of
every loaded plugin (:mod:`study.plugins`: your models and data sets) is in it too.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import subprocess
import tokenize
from pathlib import Path

from study.record.tags import CODE, GIT_COMMIT, GIT_DIRTY

#: The package's root folder (``study/``).
PACKAGE = Path(__file__).resolve().parents[1]
#: The source that trains, relative to :data:`PACKAGE`: models, optimizers, data, the
#: training loop, and the run config (its properties, e.g. ``peak_lr``, feed the trainer).
TRAINING_SOURCES = ("models", "optim", "data", "train", "config/run_config.py")


def code_fingerprint() -> str:
    """16 hex digits over the normalised :data:`TRAINING_SOURCES` of this process's package,
    and over the source of its plugins (:func:`study.plugins.plugin_sources`) if it has any."""
    from study.plugins import load_plugins, plugin_sources

    load_plugins()
    plugins = plugin_sources()
    if not plugins:  # the fingerprint runs trained before plugins existed carry
        return _package_fingerprint()
    digest = hashlib.sha256(_package_fingerprint().encode())
    for path in plugins:
        digest.update(f"\n{path.name}\n{_file_fingerprint(path, path.stat().st_mtime_ns)}".encode())
    return digest.hexdigest()[:16]


@functools.cache
def _package_fingerprint() -> str:
    return source_fingerprint(PACKAGE, TRAINING_SOURCES)


@functools.cache
def _file_fingerprint(path: Path, mtime_ns: int) -> str:
    """One plugin file's normalised source, hashed (again only when the file changes)."""
    return hashlib.sha256(normalised_source(path.read_text()).encode()).hexdigest()


def source_fingerprint(root: Path, sources: tuple[str, ...]) -> str:
    """The fingerprint of the ``*.py`` files of ``sources`` (folders or files under ``root``)."""
    files = sorted({path for source in sources
                    for path in ([root / source] if source.endswith(".py") else (root / source).rglob("*.py"))
                    if "__pycache__" not in path.parts})
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\n{normalised_source(path.read_text())}\n".encode())
    return digest.hexdigest()[:16]


def normalised_source(text: str) -> str:
    """``text`` without comments, docstrings, blank lines and trailing spaces."""
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    docstrings = _docstring_starts(text)
    cuts, in_docstring = [], False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.STRING and (token.start in docstrings or in_docstring):
            in_docstring = True  # implicitly concatenated docstring parts go too
        elif token.type not in (tokenize.NL, tokenize.COMMENT):
            in_docstring = False
        if token.type == tokenize.COMMENT or in_docstring:
            (start_line, start_col), (end_line, end_col) = token.start, token.end
            cuts.append((line_starts[start_line - 1] + start_col, line_starts[end_line - 1] + end_col))
    kept, position = [], 0
    for start, end in cuts:
        kept.append(text[position:start])
        position = end
    kept.append(text[position:])
    lines = (line.rstrip() for line in "".join(kept).splitlines())
    return "\n".join(line for line in lines if line)


def _docstring_starts(text: str) -> set[tuple[int, int]]:
    """``(line, column)`` where each docstring (module, class, function) begins."""
    starts = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                starts.add((first.lineno, first.col_offset))  # indentation: bytes == characters
    return starts


@functools.cache
def git_state() -> tuple[str, str]:
    """``(commit, dirty)`` of the package's git work tree: the short commit, and ``"true"``
    or ``"false"`` for uncommitted changes to tracked files; ``"unknown"`` outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "--short=12", "HEAD") or "").strip() or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else str(bool(status.strip())).lower()
    return commit, dirty


def code_tags() -> dict[str, str]:
    """The tags every child run carries about its code: fingerprint, git commit, dirty flag."""
    commit, dirty = git_state()
    return {CODE: code_fingerprint(), GIT_COMMIT: commit, GIT_DIRTY: dirty}
