"""A local apt repository of tiny .debs for SL-SA tests, demo and benchmarks.

Built with the real tools (gcc for two real shared libraries, ``dpkg-deb``,
``dpkg-scanpackages --multiversion``) and served to lab nodes as a ``file:``
source, never the network. The packages tell every story SL-SA must handle:

- ``sl-base`` 1.0 and 2.0: versions (and a downgrade, 2.0 -> 1.0);
- ``sl-app`` 1.0 depends on ``sl-base`` and ``libsldemo`` (a dependency);
- ``sl-conflict`` conflicts with ``sl-base`` (installing it removes sl-base and sl-app);
- ``sl-needy`` depends on ``sl-missing``, which no source has (unsatisfiable);
- ``libsldemo`` 1.0 ships ``libsldemo.so.1``, 2.0 ships ``libsldemo.so.2`` under the same
  package name: the soname change that breaks ``sl-app`` (an ABI break).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NODE_REPO = "/srv/multiall-sl-repo"
NODE_LIST = "/etc/multiall/sl.list"
APT_OPTIONS = [
    "-o",
    f"Dir::Etc::sourcelist={NODE_LIST}",
    "-o",
    "Dir::Etc::sourceparts=-",
    "-o",
    "APT::Get::List-Cleanup=0",
]

PACKAGES: list[dict[str, Any]] = [
    {"name": "sl-base", "version": "1.0"},
    {"name": "sl-base", "version": "2.0"},
    {"name": "sl-app", "version": "1.0", "depends": "sl-base, libsldemo"},
    {"name": "sl-conflict", "version": "1.0", "conflicts": "sl-base"},
    {"name": "sl-needy", "version": "1.0", "depends": "sl-missing"},
    {"name": "libsldemo", "version": "1.0", "soname": 1},
    {"name": "libsldemo", "version": "2.0", "soname": 2},
]


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _build_deb(spec: dict[str, Any], out: Path, arch: str, work: Path) -> None:
    root = work / f"{spec['name']}_{spec['version']}"
    (root / "DEBIAN").mkdir(parents=True)
    doc = root / "usr" / "share" / "doc" / spec["name"]
    doc.mkdir(parents=True)
    (doc / "README").write_text(f"{spec['name']} {spec['version']}: MultiAll SL-SA test package\n")
    control = {
        "Package": spec["name"],
        "Version": spec["version"],
        "Architecture": "all",
        "Maintainer": "MultiAll tests <root@localhost>",
        "Description": f"MultiAll SL-SA test package {spec['name']}",
    }
    if spec.get("depends"):
        control["Depends"] = spec["depends"]
    if spec.get("conflicts"):
        control["Conflicts"] = spec["conflicts"]
    if spec.get("soname"):
        major = spec["soname"]
        libdir = root / "usr" / "lib"
        libdir.mkdir(parents=True, exist_ok=True)
        src = work / f"sldemo{major}.c"
        src.write_text(f"int sldemo_version(void) {{ return {major}; }}\n")
        real = libdir / f"libsldemo.so.{major}.0"
        _run(
            [
                "gcc",
                "-shared",
                "-fPIC",
                f"-Wl,-soname,libsldemo.so.{major}",
                "-o",
                str(real),
                str(src),
            ]
        )
        (libdir / f"libsldemo.so.{major}").symlink_to(real.name)
        (root / "DEBIAN" / "triggers").write_text("activate-noawait ldconfig\n")
        (root / "DEBIAN" / "shlibs").write_text(
            f"libsldemo {major} libsldemo (>= {spec['version']})\n"
        )
        control["Architecture"] = arch
    (root / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)])


def build_repo(dest: Path) -> Path:
    """Build every package and the ``Packages`` index into ``dest`` (created); returns it."""
    dest.mkdir(parents=True, exist_ok=True)
    arch = _run(["dpkg", "--print-architecture"]).strip()
    with tempfile.TemporaryDirectory(prefix="sl-debs-") as tmp:
        for spec in PACKAGES:
            _build_deb(spec, dest / f"{spec['name']}_{spec['version']}.deb", arch, Path(tmp))
    index = _run(["dpkg-scanpackages", "--multiversion", "."], cwd=dest)
    (dest / "Packages").write_text(index)
    return dest


def install_repo(lab: Any, node: str, repo: Path) -> list[str]:
    """Copy the repository into NODE's root and point a sources list at it.

    Returns the apt options that make apt inside the node use only that source.
    """
    root = lab.node_root(node)
    target = root / NODE_REPO.lstrip("/")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(repo, target)
    # apt reads file: sources as its sandbox user _apt: the copy must be world-readable
    # (a pytest tmp dir is 0700).
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    sources = root / NODE_LIST.lstrip("/")
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(f"deb [trusted=yes] file:{NODE_REPO} ./\n")
    return list(APT_OPTIONS)


def deb_path(repo: Path, name: str, version: str) -> Path:
    """Where the .deb of NAME VERSION is in a built repository."""
    return repo / f"{name}_{version}.deb"
