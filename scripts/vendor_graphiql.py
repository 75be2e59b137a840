"""Rebuild gateway/api/static/graphiql/ from the npm registry (run by hand when upgrading).

    python scripts/vendor_graphiql.py

GraphiQL is served by the gateway itself so that it works with no internet access: nothing
is loaded from a CDN. The files come unchanged from the npm packages' prebuilt UMD builds
(GraphiQL 3 is the last major version with a UMD build; React 18 the last with UMD files),
except that the ``sourceMappingURL`` comment is dropped because the maps are not shipped.

Written next to them: each package's LICENSE, and THIRD_PARTY_LICENSES.txt with the licence
of every package bundled inside graphiql.min.js (read from its source map).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

GRAPHIQL = "3.9.0"
REACT = "18.3.1"
TARGET = Path(__file__).resolve().parent.parent / "gateway" / "static" / "graphiql"

# (package, file inside the tarball, name in TARGET)
FILES = [
    ("graphiql", "package/graphiql.min.js", "graphiql.min.js"),
    ("graphiql", "package/graphiql.min.css", "graphiql.min.css"),
    ("graphiql", "package/LICENSE", "LICENSE.graphiql"),
    ("react", "package/umd/react.production.min.js", "react.production.min.js"),
    ("react", "package/LICENSE", "LICENSE.react"),
    ("react-dom", "package/umd/react-dom.production.min.js", "react-dom.production.min.js"),
    ("react-dom", "package/LICENSE", "LICENSE.react-dom"),
]
VERSIONS = {"graphiql": GRAPHIQL, "react": REACT, "react-dom": REACT}
SOURCE_MAP_COMMENT = re.compile(rb"\n//# sourceMappingURL=[^\n]*\n?$")
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "LICENSE-MIT")


def npm(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["npm", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def bundled_packages(source_map: dict[str, object]) -> list[str]:
    names: set[str] = set()
    sources = source_map.get("sources")
    assert isinstance(sources, list)
    for source in sources:
        found = re.findall(r"node_modules/((?:@[^/]+/)?[^/]+)", str(source))
        if found:
            names.add(found[-1])
    return sorted(names)


def licence_text(package_dir: Path, meta: dict[str, object]) -> str:
    for name in LICENSE_NAMES:
        path = package_dir / name
        if path.is_file():
            return path.read_text(errors="replace").strip()
    author = meta.get("author")
    if isinstance(author, dict):
        author = author.get("name")
    return (
        f"The package ships no licence file; its package.json declares the {meta.get('license')}"
        f" licence (author: {author or 'not given'}, repository: {meta.get('repository')})."
    )


def find_package(tree: Path, name: str) -> Path:
    """The package in the install tree (a nested copy if needed); else its latest release,
    for dev dependencies of the GraphiQL monorepo that its published packages do not list."""
    direct = tree / "node_modules" / name
    if (direct / "package.json").is_file():
        return direct
    nested = sorted(tree.glob(f"node_modules/**/node_modules/{name}/package.json"))
    if nested:
        return nested[0].parent
    extra = tree / "extra" / name.replace("/", "+")
    extra.mkdir(parents=True)
    tarball = npm("pack", name, "--silent", cwd=extra).strip().splitlines()[-1]
    with tarfile.open(extra / tarball) as tar:
        tar.extractall(extra, filter="data")
    return extra / "package"


def third_party(tree: Path, packages: list[str], monorepo: list[str]) -> str:
    parts = [
        "Third-party software bundled in graphiql.min.js (GraphiQL "
        f"{GRAPHIQL}), as listed by its source map.\n"
        "Packages of the GraphiQL monorepo (bundled from source, MIT, see LICENSE.graphiql): "
        + ", ".join(monorepo)
        + ".\n"
    ]
    for name in packages:
        package_dir = find_package(tree, name)
        meta = json.loads((package_dir / "package.json").read_text())
        parts.append(
            f"{'=' * 78}\n{name} {meta.get('version', '?')} ({meta.get('license', '?')})\n"
            f"{'=' * 78}\n{licence_text(package_dir, meta)}\n"
        )
    return "\n".join(parts)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tarballs: dict[str, Path] = {}
        for package, version in VERSIONS.items():
            name = npm("pack", f"{package}@{version}", "--silent", cwd=work).strip().splitlines()
            tarballs[package] = work / name[-1]
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        source_map: dict[str, object] = {}
        for package, member, target in FILES:
            with tarfile.open(tarballs[package]) as tar:
                extracted = tar.extractfile(member)
                assert extracted is not None, member
                data = extracted.read()
            if target.endswith(".js"):
                data = SOURCE_MAP_COMMENT.sub(b"\n", data)
            (TARGET / target).write_bytes(data)
        with tarfile.open(tarballs["graphiql"]) as tar:
            extracted = tar.extractfile("package/graphiql.min.js.map")
            assert extracted is not None
            source_map = json.loads(extracted.read())
        # The bundled packages' licences, from an install of the same versions.
        tree = work / "tree"
        tree.mkdir()
        (tree / "package.json").write_text('{"name": "vendor", "private": true}')
        npm(
            "install",
            f"graphiql@{GRAPHIQL}",
            "graphql@16",
            f"react@{REACT}",
            f"react-dom@{REACT}",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            cwd=tree,
        )
        sources = source_map.get("sources")
        assert isinstance(sources, list)
        monorepo = sorted(
            {
                str(s).split("/")[2]
                for s in sources
                if str(s).startswith("../../") and "node_modules" not in str(s)
            }
        )
        packages = [p for p in bundled_packages(source_map) if p not in ("react", "react-dom")]
        (TARGET / "THIRD_PARTY_LICENSES.txt").write_text(third_party(tree, packages, monorepo))
        (TARGET / "VERSIONS.json").write_text(json.dumps(VERSIONS, indent=2) + "\n")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
