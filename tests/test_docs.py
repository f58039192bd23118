"""The docs' code samples run, and the docs site's structure holds.

The rule for samples (docs/*.md and docs/guides/*.md): **every ```python block runs** as a
script of its own, in a subprocess with a temporary directory as its working directory, unless
an HTML comment right before it says otherwise:

- ``<!-- skip-test: REASON -->``: not run (it needs a live cluster, a web server, code of your
  own...). The reason is required.
- ``<!-- test-setup ... -->``: the comment's body (Python) runs first, in the same script, to
  provide what an excerpt takes from the page around it (``app``, a task). Readers do not see it.
- ``<!-- test-redis -->``: run against a private redis-server (tests/conftest.py's
  ``RedisServer``) instead of ``memory://``.

A sample may ``await`` at top level. ``ASYNCQ_URL`` is a fresh ``memory://`` broker, and an
``asyncq.App`` built for ``redis://localhost:6379`` (the docs' usual URL) is pointed at it too,
so a sample never reaches a Redis on the default port. Warnings are errors.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.procutil import ROOT

DOCS = ROOT / "docs"
TIMEOUT = 30  # seconds per sample; they take about 0.5 s each on an idle machine

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})python\b[^\n]*\n"
    r"(?P<code>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
ANY_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.M)
COMMENT_AT_END = re.compile(r"<!--(?P<body>(?:(?!<!--).)*?)-->\s*\Z", re.S)

# Run before each sample: the redirect of redis://localhost:6379 (see the module docstring).
PRELUDE = """\
import os as _os

import asyncq as _asyncq

_init = _asyncq.App.__init__


def _redirected(self, url="redis://localhost:6379/0", *args, **kwargs):
    if url.startswith(("redis://localhost", "redis://127.0.0.1")):
        url = _os.environ["ASYNCQ_URL"]
    _init(self, url, *args, **kwargs)


_asyncq.App.__init__ = _redirected
del _redirected
"""

# Compiles the sample so that a top-level await works, and runs it as __main__.
RUNNER = """\
import ast, asyncio, sys, types
path = sys.argv[1]
with open(path) as f:
    code = compile(f.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
main = types.ModuleType("__main__")
main.__file__ = path
sys.modules["__main__"] = main
result = eval(code, main.__dict__)
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


@dataclass
class Sample:
    path: Path
    line: int
    code: str
    setup: str = ""
    skip: str | None = None
    redis: bool = False

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(DOCS).as_posix()}:{self.line}"


def doc_files() -> list[Path]:
    return sorted([*DOCS.glob("*.md"), *DOCS.glob("guides/*.md")])


def _outside_fences(text: str, end: int) -> bool:
    """Whether position ``end`` of ``text`` is outside every fenced block."""
    return len(ANY_FENCE.findall(text[:end])) % 2 == 0


def samples_of(path: Path) -> list[Sample]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        if not _outside_fences(text, m.start()):
            continue  # a ```python line inside another block (a Markdown example)
        sample = Sample(path, text.count("\n", 0, m.start()) + 1, textwrap.dedent(m["code"]))
        before = text[: m.start()]
        while (c := COMMENT_AT_END.search(before)) is not None:
            body = c["body"].strip()
            if body.startswith("skip-test"):
                sample.skip = body.removeprefix("skip-test").lstrip(":").strip()
                if not sample.skip:
                    raise ValueError(f"{sample.id}: skip-test needs a reason")
            elif body.startswith("test-setup"):
                sample.setup = textwrap.dedent(body.removeprefix("test-setup")).strip() + "\n"
            elif body == "test-redis":
                sample.redis = True
            else:
                break  # an ordinary comment: the markers must come right before the block
            before = before[: c.start()]
        found.append(sample)
    return found


SAMPLES = [s for p in doc_files() for s in samples_of(p)]


def run_sample(sample: Sample, tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"sample_{sample.path.stem}_{sample.line}.py"
    script.write_text(f"{PRELUDE}\n{sample.setup}\n{sample.code}")
    env = {
        **os.environ,
        "ASYNCQ_URL": url,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)]),
    }
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", RUNNER, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_doc_sample_runs(sample: Sample, tmp_path: Path) -> None:
    if sample.skip:
        pytest.skip(sample.skip)
    if sample.redis:
        server = RedisServer()
        try:
            out = run_sample(sample, tmp_path, server.url)
        finally:
            server.stop()
    else:
        out = run_sample(sample, tmp_path, f"memory://docs-{sample.path.stem}-{sample.line}")
    assert out.returncode == 0, f"{sample.id} failed:\n{out.stdout}\n{out.stderr}"


def test_samples_are_found() -> None:
    """The extraction sees the blocks (a broken pattern would pass every page vacuously)."""
    assert len(SAMPLES) >= 25
    assert sum(1 for s in SAMPLES if not s.skip) >= 15


def test_every_nav_entry_exists() -> None:
    """mkdocs.yml's nav names only pages that exist (or are generated); mkdocs' own
    not_found warning fails the strict build too."""
    generated = {"reference/cli.md", "reference/options.md"}
    nav = re.findall(r"^\s*- [^:\n]+: (\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert "index.md" in nav and "architecture.md" in nav
    missing = [p for p in nav if p not in generated and not (DOCS / p).is_file()]
    assert missing == [], missing
    # Every page is in the nav (mkdocs' omitted_files warning fails the build, too).
    pages = {p.relative_to(DOCS).as_posix() for p in doc_files()}
    assert pages <= set(nav), pages - set(nav)


def test_the_cli_reference_covers_every_command_and_option() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import gen_reference  # noqa: PLC0415
    finally:
        sys.path.remove(str(DOCS))
    from asyncq import cli  # noqa: PLC0415

    page = gen_reference.cli_reference()
    for parser in (cli.worker_parser(), cli.admin_parser()):
        sub = gen_reference._subparsers(parser)
        parsers = [parser, *(sub.choices.values() if sub else ())]
        for p in parsers:
            assert f"\n## {p.prog}\n" in page or f"\n### {p.prog} " in page, p.prog
            for action in p._actions:
                if isinstance(action, argparse._HelpAction):
                    continue
                for option in action.option_strings:
                    assert f"`{option}" in page or f", {option}" in page, (p.prog, option)
    options = gen_reference.options_reference()  # raises if a parameter has no Args: entry
    for name in ("lease", "result_ttl", "retries", "timeout", "executor", "grace"):
        assert f"| `{name}` |" in options
