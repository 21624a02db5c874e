"""Datasets of the CFactorVAE benchmarks, loaded whole into memory as uint8 tensors.

The data root holds one folder per dataset::

    <root>/mnist/          train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
                           t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
    <root>/fashion-mnist/  the same four file names (Fashion-MNIST)
    <root>/chairs/         rendered_chairs/<model_dir>/renders/*.png
    <root>/celeba/         img_align_celeba/*.jpg and optionally list_eval_partition.txt
    <root>/dsprites/       optionally dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz

The IDX files may also be uncompressed (same names without ``.gz``). Images are
kept as uint8 ``N x C x H x W`` tensors with values 0..255; the trainer scales each
batch to [0, 1]. docs/operations.md says how the data root is found and cached.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError

if TYPE_CHECKING:  # PIL only for the photo data sets: MNIST's loading starts 0.2 s sooner without it
    from PIL import Image


class DataError(BenchError):
    """A data set is missing, corrupt or unusable; the message says how to fix it."""


Subset = tuple[int | None, int | None]


@dataclass(frozen=True)
class Dataset:
    """One data set, fully in memory.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"mnist"``.
    train, test : torch.Tensor
        uint8 images, ``N x C x H x W``, values 0..255.
    train_factors, test_factors : torch.Tensor or None
        int64 ``N x K`` ground-truth factor indices (dsprites only).
    factor_sizes : tuple of int
        Number of values of each factor.
    factor_names : tuple of str
        Name of each factor, in column order.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_factors: torch.Tensor | None = None
    test_factors: torch.Tensor | None = None
    factor_sizes: tuple[int, ...] = ()
    factor_names: tuple[str, ...] = ()

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.train.shape[-1])

    @property
    def channels(self) -> int:
        """Number of colour channels (1 or 3)."""
        return int(self.train.shape[1])


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: what a data set looks like and how to check and load it.

    Attributes
    ----------
    name : str
        Registry name.
    image_size : int
        Side of the square images ``load`` returns.
    channels : int
        Number of colour channels ``load`` returns.
    loader : callable
        ``loader(root, subset) -> Dataset``.
    checker : callable
        ``checker(root) -> (n_train, n_test)``, the sizes of the whole splits; raises DataError
        when the files are unusable.
    files : str
        One line describing the files expected under the data root.
    ground_truth : callable or None
        ``ground_truth(root) -> GroundTruth`` for a data set generated from known factors.
    default_subset : tuple
        The first N train and M test images a subset of None stands for (None: the whole split).
    """

    name: str
    image_size: int
    channels: int
    loader: Callable[[Path, Subset], Dataset]
    checker: Callable[[Path], tuple[int, int]]
    files: str
    ground_truth: Callable[[Path], GroundTruth] | None = None
    default_subset: Subset = (None, None)


@dataclass(frozen=True)
class GroundTruth:
    """The generative process of a data set with known factors, which the disentanglement metrics query.

    Attributes
    ----------
    factor_sizes : tuple of int
        Number of values of each factor; every combination is one image.
    factor_names : tuple of str
        Name of each factor, in column order.
    images : callable
        ``images(factors) -> uint8 N x C x H x W tensor`` for an int ``N x K`` array of factor indices.
    """

    factor_sizes: tuple[int, ...]
    factor_names: tuple[str, ...]
    images: Callable[[np.ndarray], torch.Tensor]


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    """Pick the data root: the argument, else ``$BENCH_DATA``, else ``~/.cache/bench/data``.

    Parameters
    ----------
    data_root : str, os.PathLike or None
        The ``--data-root`` option, if given.

    Returns
    -------
    Path
        The root folder; it need not exist yet.
    """
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get("BENCH_DATA", "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bench" / "data"


def parse_subset(text: str) -> Subset:
    """Parse ``"N"`` or ``"N,M"`` into (train count, test count).

    Parameters
    ----------
    text : str
        ``"N"`` limits the training images to the first N and keeps the whole
        test split; ``"N,M"`` limits both.

    Returns
    -------
    tuple
        ``(N, None)`` or ``(N, M)``.

    Raises
    ------
    DataError
        When the text is not one or two positive integers separated by a comma.
    """
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise DataError(f"bad subset {text!r}: give N or N,M (first N train and first M test images)")
    counts = []
    for part in parts:
        try:
            value = int(part.strip())
        except ValueError:
            raise DataError(
                f"bad subset {text!r}: give N or N,M with whole numbers, e.g. 1000 or 1000,200"
            ) from None
        if value <= 0:
            raise DataError(f"bad subset {text!r}: the counts must be positive, e.g. 1000 or 1000,200")
        counts.append(value)
    return (counts[0], counts[1] if len(counts) == 2 else None)


def _one_line(text: str, limit: int = 200) -> str:
    """Squash an exception message into one short line for a DataError."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _take(count: int | None, available: int) -> int:
    """How many of the first images to keep; counts past the end keep them all."""
    return available if count is None else min(count, available)


# ---------------------------------------------------------------------------
# IDX files: MNIST and Fashion-MNIST
# ---------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class _IdxFile:
    stem: str  # file name without .gz
    gz_md5: str  # md5 of the published .gz
    raw_md5: str  # md5 of its decompressed content, so recompressed copies verify too


_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# The .gz md5s are the ones torchvision checks; the raw md5s are those published
# for the decompressed files (checked against the real files before being written here).
_MNIST_FILES = (
    _IdxFile(_IDX_STEMS[0], "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    _IdxFile(_IDX_STEMS[1], "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    _IdxFile(_IDX_STEMS[2], "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    _IdxFile(_IDX_STEMS[3], "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
)

# Debian's dataset-fashion-mnist recompresses the files (its .gz md5s differ from
# Zalando's) but their content matches the published raw md5s below.
_FASHION_FILES = (
    _IdxFile(_IDX_STEMS[0], "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    _IdxFile(_IDX_STEMS[1], "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    _IdxFile(_IDX_STEMS[2], "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    _IdxFile(_IDX_STEMS[3], "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
)

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_MNIST_SIZE = 32  # the paper (section 5.1) resizes MNIST and Fashion-MNIST to 32x32
_RESIZE_VERSION = 1  # part of the cache file name: change it whenever _resize_idx_images changes its output
_RESIZE_CHUNK = 10_000  # images resized at a time, to bound the float copy's memory


@dataclass(frozen=True)
class _IdxSet:
    name: str
    files: tuple[_IdxFile, ...]
    torchvision_class: str  # also names torchvision's download folder, <root>/<class>/raw
    debian_package: str | None = None  # installs the files in DEBIAN_FASHION_DIR


def _parse_idx(data: bytes, source: Path | str) -> np.ndarray:
    """Decode uncompressed IDX bytes into a uint8 array, checking the header."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise DataError(f"{source} is not an IDX file of unsigned bytes; replace it with the original download")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{source} has a truncated IDX header; replace it with the original download")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + int(np.prod(dims)):
        raise DataError(
            f"{source} holds {len(data) - header} bytes of data but its header says {dims}; "
            "replace it with the original download"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) without checksum or resizing.

    Parameters
    ----------
    path : str or os.PathLike
        An MNIST-style IDX file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        uint8 array with the dimensions the header gives (``N x 28 x 28`` for images,
        ``N`` for labels).
    """
    path = Path(path)
    blob = path.read_bytes()
    if blob[:2] == _GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path} is corrupt ({_one_line(err)}); delete it and download it again") from None
    return _parse_idx(blob, path)


def _file_in(folder: Path, stem: str) -> Path | None:
    """The gzipped or plain copy of an IDX file in a folder, preferring the .gz."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _checked_idx_bytes(path: Path, spec: _IdxFile, decompress: bool) -> bytes | None:
    """Check a file against its published md5 and return its IDX bytes when asked.

    A .gz whose own md5 differs is still accepted when its content has the published
    raw md5, since repackagers (Debian among them) recompress the same data.
    """
    blob = path.read_bytes()
    data = blob
    if blob[:2] == _GZIP_MAGIC:
        if hashlib.md5(blob).hexdigest() == spec.gz_md5:
            return gzip.decompress(blob) if decompress else None
        try:
            data = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error):
            raise DataError(
                f"{path} is corrupt (md5 {hashlib.md5(blob).hexdigest()}, expected {spec.gz_md5}); "
                "delete it and download it again"
            ) from None
    digest = hashlib.md5(data).hexdigest()
    if digest != spec.raw_md5:
        raise DataError(
            f"{path} is corrupt (content md5 {digest}, expected {spec.raw_md5}); delete it and download it again"
        )
    return data if decompress else None


def _complete_dir(folder: Path, files: Sequence[_IdxFile]) -> dict[str, Path] | None:
    """Map each IDX stem to its file when the folder has all of them."""
    found = {f.stem: _file_in(folder, f.stem) for f in files}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


def _download_idx(idx: _IdxSet, target: Path) -> str | None:
    """Fetch the files with torchvision into ``target``; return why it failed, or None."""
    if os.environ.get("BENCH_NO_DOWNLOAD", "") not in ("", "0"):
        return "download skipped because BENCH_NO_DOWNLOAD is set"
    import torchvision.datasets

    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    except OSError as err:
        return f"cannot write to {target}: {_one_line(err)}"
    try:
        getattr(torchvision.datasets, idx.torchvision_class)(str(staging), download=True)
        raw = staging / idx.torchvision_class / "raw"
        for f in idx.files:
            shutil.move(str(raw / f"{f.stem}.gz"), str(target / f"{f.stem}.gz"))
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError... all mean "no data"
        return f"download failed: {_one_line(err)}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return None


def _locate_idx(idx: _IdxSet, root: Path) -> dict[str, Path]:
    """Find a folder holding all four IDX files, downloading them if none does."""
    home = root / idx.name
    # read at call time so tests can point it elsewhere
    system_dirs = (DEBIAN_FASHION_DIR,) if idx.debian_package else ()
    folders = (home, home / idx.torchvision_class / "raw", *system_dirs)
    for folder in folders:
        found = _complete_dir(folder, idx.files)
        if found:
            return found
    reason = _download_idx(idx, home)
    found = _complete_dir(home, idx.files)
    if found:
        return found
    missing = [f"{f.stem}.gz" for f in idx.files if _file_in(home, f.stem) is None]
    extra = ""
    if idx.debian_package:
        extra = f" (or apt-get install {idx.debian_package}, which puts them in {DEBIAN_FASHION_DIR})"
    raise DataError(
        f"{idx.name} files missing: put {', '.join(missing)} in {home}{extra}; {reason}"
    )


def _resize_idx_images(images: np.ndarray) -> torch.Tensor:
    """Resize N x 28 x 28 uint8 images to N x 1 x 32 x 32 uint8, bilinear on floats."""
    out = torch.empty((images.shape[0], 1, _MNIST_SIZE, _MNIST_SIZE), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        # astype copies, so torch never wraps the read-only buffer of the decompressed file
        chunk = torch.from_numpy(images[start : start + _RESIZE_CHUNK].astype(np.float32)).unsqueeze(1)
        resized = F.interpolate(
            chunk, size=(_MNIST_SIZE, _MNIST_SIZE), mode="bilinear", align_corners=False, antialias=False
        )
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def cache_root() -> Path:
    """Where resized datasets are kept between runs: ``$BENCH_CACHE``, else ``~/.cache/bench``."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench")


def _resized_idx_images(path: Path, spec: _IdxFile) -> torch.Tensor:
    """The verified IDX images at ``path`` resized to 32x32, through an on-disk cache.

    The cache file is named by the published md5 of the file's content, which the file has
    just been checked against, and by :data:`_RESIZE_VERSION`; a missing, unreadable or
    malformed cache file is rebuilt, and a cache folder that cannot be written is skipped.
    """
    cache = cache_root() / f"{spec.stem}-{spec.raw_md5}-{_MNIST_SIZE}px-v{_RESIZE_VERSION}.npy"
    try:
        cached = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        cached = None
    if cached is not None and cached.dtype == np.uint8 and cached.shape[1:] == (1, _MNIST_SIZE, _MNIST_SIZE):
        _checked_idx_bytes(path, spec, decompress=False)  # the file must still be the published one
        return torch.from_numpy(cached)
    images = _resize_idx_images(_parse_idx(_checked_idx_bytes(path, spec, decompress=True), path))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, images.numpy(), allow_pickle=False)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home costs the resize on every start, nothing else
    return images


def _idx_count(path: Path) -> int:
    """The number of items the header of an md5-checked IDX file (gzipped or not) gives."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == _GZIP_MAGIC
    with gzip.open(path) if gzipped else open(path, "rb") as handle:
        return int.from_bytes(handle.read(8)[4:8], "big")


def _idx_checker(idx: _IdxSet) -> Callable[[Path], tuple[int, int]]:
    def check(root: Path) -> tuple[int, int]:
        paths = _locate_idx(idx, root)
        for f in idx.files:
            _checked_idx_bytes(paths[f.stem], f, decompress=False)
        return _idx_count(paths["train-images-idx3-ubyte"]), _idx_count(paths["t10k-images-idx3-ubyte"])

    return check


def _idx_loader(idx: _IdxSet) -> Callable[[Path, Subset], Dataset]:
    def load_idx(root: Path, subset: Subset) -> Dataset:
        paths = _locate_idx(idx, root)
        images = {}
        for f in idx.files:
            if "images" in f.stem:
                images[f.stem] = _resized_idx_images(paths[f.stem], f)
            else:
                _checked_idx_bytes(paths[f.stem], f, decompress=False)  # labels are checked, not kept
        train = images["train-images-idx3-ubyte"]
        test = images["t10k-images-idx3-ubyte"]
        return Dataset(
            name=idx.name,
            train=train[: _take(subset[0], len(train))],
            test=test[: _take(subset[1], len(test))],
        )

    return load_idx


_MNIST = _IdxSet("mnist", _MNIST_FILES, "MNIST")
_FASHION = _IdxSet("fashion-mnist", _FASHION_FILES, "FashionMNIST", "dataset-fashion-mnist")


# ---------------------------------------------------------------------------
# Folders of image files: 3D Chairs and CelebA
# ---------------------------------------------------------------------------

_POOL_WORKERS = min(8, os.cpu_count() or 1)  # Pillow releases the GIL while decoding
_PHOTO_SIZE = 64
_CHAIRS_TEST_EVERY = 10  # every 10th chair model (sorted) is held out
_CELEBA_CROP = 148
_CELEBA_TRAIN_LAST = 162_770  # standard split by file number when no partition file exists
_CELEBA_TEST_FIRST = 182_638


def _load_images(paths: Sequence[Path], prepare: Callable[[Image.Image], Image.Image], channels: int) -> torch.Tensor:
    """Decode and preprocess image files into an N x C x 64 x 64 uint8 tensor."""
    from PIL import Image

    out = np.empty((len(paths), _PHOTO_SIZE, _PHOTO_SIZE, channels), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(paths[i]) as img:
                pixels = np.asarray(prepare(img), dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read image {paths[i]} ({_one_line(err, 100)}); replace or delete it") from None
        out[i] = pixels.reshape(_PHOTO_SIZE, _PHOTO_SIZE, channels)

    with ThreadPoolExecutor(max_workers=_POOL_WORKERS) as pool:
        # list() re-raises the first DataError from a worker
        list(pool.map(one, range(len(paths))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _chairs_split(root: Path) -> tuple[list[Path], list[Path]]:
    """Render files of the train and test chairs; every 10th model (sorted) is a test chair."""
    base = root / "chairs" / "rendered_chairs"
    hint = f"extract rendered_chairs.tar so that {base}/<model_dir>/renders/*.png exist"
    if not base.is_dir():
        raise DataError(f"chairs folder {base} is missing; {hint}")
    models = sorted(d for d in base.iterdir() if (d / "renders").is_dir())
    if len(models) < _CHAIRS_TEST_EVERY:
        raise DataError(
            f"chairs needs at least {_CHAIRS_TEST_EVERY} model folders in {base} to hold one out, "
            f"found {len(models)}; {hint}"
        )
    train: list[Path] = []
    test: list[Path] = []
    for i, model in enumerate(models):
        renders = sorted((model / "renders").glob("*.png"))
        (test if i % _CHAIRS_TEST_EVERY == _CHAIRS_TEST_EVERY - 1 else train).extend(renders)
    if not train or not test:
        raise DataError(f"chairs model folders in {base} hold no PNG renders; {hint}")
    return train, test


def _chair_pixels(img: Image.Image) -> Image.Image:
    from PIL import Image

    return img.convert("L").resize((_PHOTO_SIZE, _PHOTO_SIZE), Image.Resampling.BILINEAR)




def _celeba_split(root: Path) -> tuple[list[Path], list[Path]]:
    """Train (partition 0) and test (partition 2) image files; validation images are left out."""
    base = root / "celeba"
    folder = base / "img_align_celeba"
    hint = f"extract img_align_celeba.zip into {base} (and put list_eval_partition.txt beside it)"
    if not folder.is_dir():
        raise DataError(f"celeba folder {folder} is missing; {hint}")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    if not names:
        raise DataError(f"celeba folder {folder} holds no .jpg images; {hint}")
    partition_file = base / "list_eval_partition.txt"
    if partition_file.is_file():
        partition: dict[str, int] = {}
        for line in partition_file.read_text().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] in ("0", "1", "2"):
                partition[fields[0]] = int(fields[1])
        unlisted = [n for n in names if n not in partition]
        if unlisted:
            raise DataError(
                f"{partition_file} does not list {unlisted[0]} ({len(unlisted)} images unlisted); "
                "use the list_eval_partition.txt that comes with img_align_celeba"
            )
    else:
        partition = {}
        for n in names:
            try:
                number = int(Path(n).stem)
            except ValueError:
                raise DataError(
                    f"celeba image {folder / n} is not named by number and there is no {partition_file}; "
                    "add list_eval_partition.txt"
                ) from None
            partition[n] = 0 if number <= _CELEBA_TRAIN_LAST else 2 if number >= _CELEBA_TEST_FIRST else 1
    train = [folder / n for n in names if partition[n] == 0]
    test = [folder / n for n in names if partition[n] == 2]
    if not train or not test:
        raise DataError(
            f"celeba in {folder} has {len(train)} train and {len(test)} test images, needs both; {hint}"
        )
    return train, test


def _celeba_pixels(img: Image.Image) -> Image.Image:
    from PIL import Image

    img = img.convert("RGB")
    width, height = img.size
    if width < _CELEBA_CROP or height < _CELEBA_CROP:
        raise ValueError(f"image is {width}x{height}, smaller than the {_CELEBA_CROP} crop")
    # same rounding as torchvision's CenterCrop
    left = int(round((width - _CELEBA_CROP) / 2.0))
    top = int(round((height - _CELEBA_CROP) / 2.0))
    img = img.crop((left, top, left + _CELEBA_CROP, top + _CELEBA_CROP))
    return img.resize((_PHOTO_SIZE, _PHOTO_SIZE), Image.Resampling.BILINEAR)


def _image_folder(name: str, split, pixels, channels: int):
    """``(checker, loader)`` for a data set of image files: ``split(root)`` lists the train and
    test files (raising DataError when unusable), ``pixels`` turns one image into its final form."""

    def check(root: Path) -> tuple[int, int]:
        train, test = split(root)
        return len(train), len(test)

    def load(root: Path, subset: Subset) -> Dataset:
        train, test = split(root)
        return Dataset(
            name=name,
            train=_load_images(train[: _take(subset[0], len(train))], pixels, channels),
            test=_load_images(test[: _take(subset[1], len(test))], pixels, channels),
        )

    return check, load


_check_chairs, _load_chairs = _image_folder("chairs", _chairs_split, _chair_pixels, 1)
_check_celeba, _load_celeba = _image_folder("celeba", _celeba_split, _celeba_pixels, 3)


# ---------------------------------------------------------------------------
# dSprites
# ---------------------------------------------------------------------------

DSPRITES_FACTOR_SIZES = (3, 6, 40, 32, 32)
DSPRITES_FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
DSPRITES_SEED = 0
DSPRITES_DEFAULT_SUBSET = (100_000, 10_000)  # the full grid would be 3 GB of uint8
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"

_DSPRITES_SIZE = 64
# 32 one-pixel position steps across 64 pixels leave a 33-pixel canvas for the
# sprite, so every position keeps the whole sprite inside the frame.
_SPRITE = _DSPRITES_SIZE - DSPRITES_FACTOR_SIZES[3] + 1
_SPRITE_RADIUS = (_SPRITE - 1) / 2  # pixels; a scale-1 sprite fits the circle of this radius
# as in dSprites: scale 0.5..1 and 40 angles over [0, 2pi], both ends included
_SCALES = np.linspace(0.5, 1.0, DSPRITES_FACTOR_SIZES[1])
_ANGLES = np.linspace(0.0, 2 * np.pi, DSPRITES_FACTOR_SIZES[2])


def dsprites_split(n: int = int(np.prod(DSPRITES_FACTOR_SIZES))) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled train/test split of grid indices, 90/10.

    Parameters
    ----------
    n : int
        Number of images in the grid (737,280 for dSprites).

    Returns
    -------
    train, test : numpy.ndarray
        int64 grid indices in shuffled order; ``load`` takes the first ones of each.
    """
    order = np.random.default_rng(DSPRITES_SEED).permutation(n)
    n_test = n // 10
    return order[: n - n_test], order[n - n_test :]


def dsprites_factors(indices: np.ndarray) -> np.ndarray:
    """Decode grid indices into factor indices, pos_y varying fastest as in dSprites.

    Parameters
    ----------
    indices : numpy.ndarray
        Grid indices in ``[0, 737280)``.

    Returns
    -------
    numpy.ndarray
        int64 ``N x 5`` array: shape, scale, orientation, pos_x, pos_y.
    """
    return np.stack(np.unravel_index(np.asarray(indices), DSPRITES_FACTOR_SIZES), axis=1).astype(np.int64)


def _sprite_masks() -> np.ndarray:
    """All sprites as boolean masks, indexed [shape, scale, orientation, row, col].

    Each shape fits the unit circle, so any rotation of a scale-1 sprite stays on the canvas.
    """
    offsets = np.arange(_SPRITE) - _SPRITE_RADIUS
    y_up = -offsets[:, None]  # rows grow downwards; flip so the heart stands upright
    x = offsets[None, :]
    scale = _SCALES[:, None, None, None] * _SPRITE_RADIUS
    cos = np.cos(_ANGLES)[None, :, None, None]
    sin = np.sin(_ANGLES)[None, :, None, None]
    # pixel centre in the sprite's own frame: rotate back by the angle, divide by the size
    u = (cos * x + sin * y_up) / scale
    v = (-sin * x + cos * y_up) / scale
    square = np.maximum(np.abs(u), np.abs(v)) <= 1 / np.sqrt(2)
    ellipse = u**2 + (v / 0.5) ** 2 <= 1
    # the heart curve (x^2 + y^2 - 1)^3 = x^2 y^3 spans y in [-1, 1.24]; shifted up by
    # 0.25 every point lies within 1.25 of the origin, so scale by 1.25 to fit the unit circle
    hx, hy = 1.25 * u, 1.25 * v + 0.25
    heart = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    return np.stack([square, ellipse, heart])


def render_dsprites(factors: np.ndarray) -> torch.Tensor:
    """Draw dSprites-style images for factor index vectors.

    The sprite for (shape, scale, orientation) is drawn once on a 33x33 canvas and
    pasted with its top-left corner at row ``pos_y`` and column ``pos_x``, so each
    position step moves it by one pixel.

    Parameters
    ----------
    factors : numpy.ndarray
        int ``N x 5`` factor indices (shape, scale, orientation, pos_x, pos_y).

    Returns
    -------
    torch.Tensor
        uint8 ``N x 1 x 64 x 64`` images with values 0 and 255.
    """
    factors = np.asarray(factors, dtype=np.int64)
    masks = _sprite_masks().reshape(-1, _SPRITE * _SPRITE)
    out = np.zeros((len(factors), _DSPRITES_SIZE * _DSPRITES_SIZE), dtype=np.uint8)
    sprite = factors[:, 0] * _SCALES.size * _ANGLES.size + factors[:, 1] * _ANGLES.size + factors[:, 2]
    canvas = (np.arange(_SPRITE)[:, None] * _DSPRITES_SIZE + np.arange(_SPRITE)[None, :]).reshape(-1)
    corner = factors[:, 4] * _DSPRITES_SIZE + factors[:, 3]
    flat = out.reshape(-1)
    chunk = 4096  # bounds the N x 1089 index array
    for start in range(0, len(factors), chunk):
        stop = start + chunk
        rows = np.arange(start, min(stop, len(factors)))
        lit = masks[sprite[start:stop]]
        where = rows[:, None] * _DSPRITES_SIZE**2 + corner[start:stop, None] + canvas[None, :]
        flat[where[lit]] = 255
    return torch.from_numpy(out).view(-1, 1, _DSPRITES_SIZE, _DSPRITES_SIZE)


def _dsprites_counts(subset: Subset, n_train: int, n_test: int) -> tuple[int, int]:
    train = DSPRITES_DEFAULT_SUBSET[0] if subset[0] is None else subset[0]
    test = DSPRITES_DEFAULT_SUBSET[1] if subset[1] is None else subset[1]
    return _take(train, n_train), _take(test, n_test)


def _check_dsprites(root: Path) -> tuple[int, int]:
    path = root / "dsprites" / DSPRITES_FILE
    if not path.exists():
        images = int(np.prod(DSPRITES_FACTOR_SIZES))  # no file: the grid is generated
        return images - images // 10, images // 10
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
            if {"imgs", "latents_classes"} <= keys:
                # The header alone gives the number of images: the arrays are 3 GB once inflated.
                with npz.zip.open("latents_classes.npy") as handle:
                    version = np.lib.format.read_magic(handle)
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    images = header(handle)[0][0]
    except (OSError, ValueError, IndexError) as err:
        raise DataError(f"{path} is unreadable ({_one_line(err, 100)}); download it again or delete it") from None
    if not {"imgs", "latents_classes"} <= keys:
        raise DataError(f"{path} lacks the imgs and latents_classes arrays; download it again or delete it")
    return images - images // 10, images // 10  # as dsprites_split splits them


def _load_dsprites(root: Path, subset: Subset) -> Dataset:
    """The real dSprites file when present, else the generated grid, split the same way."""
    path = root / "dsprites" / DSPRITES_FILE
    if path.exists():
        _check_dsprites(root)
        with np.load(path) as npz:
            classes = np.asarray(npz["latents_classes"], dtype=np.int64)[:, 1:]
            imgs = npz["imgs"]
        if imgs.shape[1:] != (_DSPRITES_SIZE, _DSPRITES_SIZE) or len(imgs) != len(classes):
            raise DataError(f"{path} does not hold 64x64 images matching its latents; download it again")
        train_idx, test_idx = dsprites_split(len(classes))
        n_train, n_test = _dsprites_counts(subset, len(train_idx), len(test_idx))
        parts = []
        for idx in (train_idx[:n_train], test_idx[:n_test]):
            images = torch.from_numpy((imgs[idx] > 0).astype(np.uint8) * 255).unsqueeze(1)
            parts.append((images, torch.from_numpy(classes[idx])))
    else:
        train_idx, test_idx = dsprites_split()
        n_train, n_test = _dsprites_counts(subset, len(train_idx), len(test_idx))
        parts = []
        for idx in (train_idx[:n_train], test_idx[:n_test]):
            factors = dsprites_factors(idx)
            parts.append((render_dsprites(factors), torch.from_numpy(factors)))
    return Dataset(
        name="dsprites",
        train=parts[0][0],
        test=parts[1][0],
        train_factors=parts[0][1],
        test_factors=parts[1][1],
        factor_sizes=DSPRITES_FACTOR_SIZES,
        factor_names=DSPRITES_FACTOR_NAMES,
    )


def _dsprites_ground_truth(root: Path) -> GroundTruth:
    """Every factor combination of dSprites: looked up in the real file when present, else drawn.

    The real file's images (about 3 GB once inflated) are read at the first lookup, not here: a stack
    asks for its ground truth when it starts, but only scores its runs when they finish.
    """
    path = root / "dsprites" / DSPRITES_FILE
    images = render_dsprites
    if path.exists():
        _check_dsprites(root)

        @functools.cache
        def grid_and_rows() -> tuple[np.ndarray, np.ndarray]:
            with np.load(path) as npz:
                grid = npz["imgs"]
                classes = np.asarray(npz["latents_classes"], dtype=np.int64)[:, 1:]
            # The file lists the grid in order, but looking images up by their latents does not rely on it.
            row_of = np.full(int(np.prod(DSPRITES_FACTOR_SIZES)), -1, dtype=np.int64)
            row_of[np.ravel_multi_index(classes.T, DSPRITES_FACTOR_SIZES)] = np.arange(len(classes))
            return grid, row_of

        def images(factors: np.ndarray) -> torch.Tensor:
            grid, row_of = grid_and_rows()
            rows = row_of[np.ravel_multi_index(np.asarray(factors, dtype=np.int64).T, DSPRITES_FACTOR_SIZES)]
            if (rows < 0).any():
                raise DataError(f"{path} lacks the image of factors {np.asarray(factors)[rows < 0][0].tolist()}; "
                                "download it again")
            return torch.from_numpy((grid[rows] > 0).astype(np.uint8) * 255).unsqueeze(1)

    return GroundTruth(DSPRITES_FACTOR_SIZES, DSPRITES_FACTOR_NAMES, images)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", _MNIST_SIZE, 1, _idx_loader(_MNIST), _idx_checker(_MNIST),
        "mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (downloaded when absent), resized to 32x32",
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", _MNIST_SIZE, 1, _idx_loader(_FASHION), _idx_checker(_FASHION),
        "fashion-mnist/ with the same four IDX .gz names (or Debian's dataset-fashion-mnist), resized to 32x32",
    ),
    "chairs": DatasetSpec(
        "chairs", _PHOTO_SIZE, 1, _load_chairs, _check_chairs,
        "chairs/rendered_chairs/<model_dir>/renders/*.png (3D Chairs), grey 64x64, every 10th model held out",
    ),
    "celeba": DatasetSpec(
        "celeba", _PHOTO_SIZE, 3, _load_celeba, _check_celeba,
        "celeba/img_align_celeba/*.jpg plus optional celeba/list_eval_partition.txt, 148 crop to 64x64 RGB",
    ),
    "dsprites": DatasetSpec(
        "dsprites", _DSPRITES_SIZE, 1, _load_dsprites, _check_dsprites,
        f"generated (or dsprites/{DSPRITES_FILE}); first 100000 train / 10000 test of a fixed shuffle by default",
        _dsprites_ground_truth, DSPRITES_DEFAULT_SUBSET,
    ),
}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}") from None


def verify(name: str, root: Path) -> None:
    """Check quickly that a data set's files are present and intact.

    MNIST and Fashion-MNIST files are md5-checked (MNIST is downloaded when absent,
    unless ``BENCH_NO_DOWNLOAD=1``); the image folders are checked for layout and a
    non-empty train and test split; dsprites needs no files.

    Parameters
    ----------
    name : str
        Registry name.
    root : Path
        Data root, see ``resolve_root``.

    Returns
    -------
    tuple of int
        The number of images in the whole train and test splits.

    Raises
    ------
    DataError
        Naming what is missing or corrupt and where to put the files.
    """
    return _spec(name).checker(Path(root))


def subset_sizes(name: str, full: tuple[int, int], subset: Subset = (None, None)) -> tuple[int, int]:
    """How many train and test images :func:`load` returns for ``subset``, from the splits' sizes.

    Parameters
    ----------
    name : str
        Registry name.
    full : tuple of int
        The sizes of the whole splits, as :func:`verify` returns them.
    subset : tuple
        As for :func:`load`.

    Returns
    -------
    tuple of int
        ``(n_train, n_test)``, what a training run of that subset meets.
    """
    default = _spec(name).default_subset
    return tuple(_take(default[i] if subset[i] is None else subset[i], full[i]) for i in (0, 1))


def ground_truth(name: str, root: Path) -> GroundTruth | None:
    """The generative process of a data set with known factors (dsprites); None for the others."""
    spec = _spec(name)
    return spec.ground_truth(Path(root)) if spec.ground_truth is not None else None


def load(name: str, root: Path, subset: Subset = (None, None)) -> Dataset:
    """Load a data set into memory once, as uint8 tensors.

    Parameters
    ----------
    name : str
        Registry name.
    root : Path
        Data root, see ``resolve_root``.
    subset : tuple
        First N train and first M test images; None keeps the whole split, and a
        count larger than the split keeps it whole. For dsprites None means the
        first 100,000 train and 10,000 test images of the fixed shuffle
        (the full grid of 737,280 would take 3 GB).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the files are missing, corrupt or unusable.
    """
    return _spec(name).loader(Path(root), subset)
