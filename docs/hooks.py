"""mkdocs hooks of the docs site (mkdocs.yml ``hooks:``).

- The reference pages (``reference/cli.md``, ``reference/options.md``) are generated from the
  code by ``docs/gen_reference.py`` on every build; nothing is written into docs/.
- The pages link to repository files outside docs/ (``../examples/flows.py``), which work on
  GitHub but are not part of a site. Each such file is published under ``_repo/`` and the link
  rewritten to it; a link to a file that does not exist is left alone, so mkdocs' link
  validation reports it and the strict build fails.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
REPO_PREFIX = "_repo"
# A Markdown link or image target: ](target) or ](target "title").
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")


def _gen_reference() -> Any:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_reference"] = module
    spec.loader.exec_module(module)
    return module


def _outside_target(page_src: str, target: str) -> Path | None:
    """The repository file a relative link of docs/``page_src`` names, when it is outside docs/."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_src), target))
    if not joined.startswith("../"):
        return None
    return (DOCS / joined).resolve()


def on_files(files: Files, config: Any) -> Files:
    for rel, text in _gen_reference().pages().items():
        files.append(File.generated(config, rel, content=text))
    published: set[Path] = set()
    for file in list(files.documentation_pages()):
        if file.abs_src_path is None:
            continue
        text = Path(file.abs_src_path).read_text(encoding="utf-8")
        for m in LINK.finditer(text):
            path = _outside_target(file.src_uri, m.group(2))
            if path and path.is_file() and REPO in path.parents and path not in published:
                published.add(path)
                uri = f"{REPO_PREFIX}/{path.relative_to(REPO).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    src = page.file.src_uri

    def rewrite(m: re.Match[str]) -> str:
        path = _outside_target(src, m.group(2))
        if path is None:
            return m.group(0)
        if not path.is_file() or REPO not in path.parents:
            return m.group(0)  # mkdocs' own link validation reports it
        uri = f"{REPO_PREFIX}/{path.relative_to(REPO).as_posix()}"
        target = posixpath.relpath(uri, posixpath.dirname(src) or ".")
        return f"{m.group(1)}{target}{m.group(3) or ''}{m.group(4)}"

    return LINK.sub(rewrite, markdown)
