"""Tests of bench.data.datasets: real MNIST (and Debian's Fashion-MNIST where installed),
generated folders in the real 3D Chairs and CelebA layouts, and the dSprites grid."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support import DATA_ROOT

from bench.data import datasets as data
from bench.data.datasets import DataError

MNIST_DIR = DATA_ROOT / "mnist"
MNIST_NAMES = [f"{stem}.gz" for stem in data._IDX_STEMS]
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / n).is_file() for n in MNIST_NAMES),
    reason=f"real MNIST files not found in {MNIST_DIR} (set BENCH_DATA to the folder holding mnist/)",
)
needs_debian_fashion = pytest.mark.skipif(
    not all((data.DEBIAN_FASHION_DIR / n).is_file() for n in MNIST_NAMES),
    reason=f"Debian's dataset-fashion-mnist is not installed in {data.DEBIAN_FASHION_DIR}",
)


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    monkeypatch.setenv("BENCH_NO_DOWNLOAD", "1")


def link_mnist(folder: Path, skip: str | None = None) -> None:
    """Symlink the real MNIST files into a folder, except one the test provides itself."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_NAMES:
        if name != skip:
            (folder / name).symlink_to(MNIST_DIR / name)


# --------------------------------------------------------------------------- API


@pytest.mark.fast
@pytest.mark.parametrize(
    "text, expected",
    [("100", (100, None)), ("100,20", (100, 20)), (" 7 , 3 ", (7, 3)), ("1", (1, None))],
)
def test_parse_subset_accepts(text, expected):
    assert data.parse_subset(text) == expected


@pytest.mark.fast
@pytest.mark.parametrize("text", ["", "abc", "1,2,3", "0", "-5", "10,0", "10,", ",10", "1.5"])
def test_parse_subset_rejects(text):
    with pytest.raises(DataError, match="subset"):
        data.parse_subset(text)


@pytest.mark.fast
def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data.resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("BENCH_DATA")
    assert data.resolve_root(None) == tmp_path / "home" / ".cache" / "bench" / "data"


@pytest.mark.fast
def test_unknown_name_lists_known(tmp_path):
    for call in (lambda: data.verify("cifar", tmp_path), lambda: data.load("cifar", tmp_path)):
        with pytest.raises(DataError) as err:
            call()
        for name in ("mnist", "fashion-mnist", "chairs", "celeba", "dsprites"):
            assert name in str(err.value)


@pytest.mark.fast
def test_registry():
    expected = {"mnist": (32, 1), "fashion-mnist": (32, 1), "chairs": (64, 1), "celeba": (64, 3), "dsprites": (64, 1)}
    assert {k: (s.image_size, s.channels) for k, s in data.DATASETS.items()} == expected
    for spec in data.DATASETS.values():
        assert spec.files and "\n" not in spec.files


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", DATA_ROOT)


@pytest.mark.fast
@needs_mnist
def test_read_idx_raw_mnist():
    images = data.read_idx(MNIST_DIR / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert images.mean(dtype=np.float64) == pytest.approx(33.3184, abs=5e-5)
    labels = data.read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,)
    assert np.bincount(labels)[0] == 5923
    assert data.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz").shape == (10000, 28, 28)


@pytest.mark.fast
@needs_mnist
def test_mnist_full_load(mnist):
    assert mnist.name == "mnist"
    assert mnist.train.shape == (60000, 1, 32, 32) and mnist.train.dtype == torch.uint8
    assert mnist.test.shape == (10000, 1, 32, 32) and mnist.test.dtype == torch.uint8
    assert (mnist.image_size, mnist.channels) == (32, 1)
    assert mnist.train_factors is None and mnist.factor_sizes == ()
    raw = torch.from_numpy(data.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")[-5:].astype(np.float32))
    expected = F.interpolate(raw[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(mnist.test[-5:], expected.round().clamp(0, 255).to(torch.uint8))


@pytest.mark.fast
@needs_mnist
def test_mnist_subset(mnist):
    part = data.load("mnist", DATA_ROOT, (100, 20))
    assert part.train.shape == (100, 1, 32, 32) and part.test.shape == (20, 1, 32, 32)
    assert torch.equal(part.train, mnist.train[:100]) and torch.equal(part.test, mnist.test[:20])
    assert data.load("mnist", DATA_ROOT, (10, None)).test.shape[0] == 10000


@needs_mnist
def test_resized_mnist_is_cached_keyed_by_its_content_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    first = data.load("mnist", DATA_ROOT, (64, 32))
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert names == [f"t10k-images-idx3-ubyte-2646ac647ad5339dbf082846283269ea-32px-v{data._RESIZE_VERSION}.npy",
                     f"train-images-idx3-ubyte-6bbc9ace898e44ae57da46a324031adb-32px-v{data._RESIZE_VERSION}.npy"]
    assert np.load(tmp_path / "cache" / names[1]).shape == (60000, 1, 32, 32)  # the whole split, sliced on load

    def no_resize(images):
        raise AssertionError("resized again although cached")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_resize_idx_images", no_resize)
        again = data.load("mnist", DATA_ROOT, (64, 32))
    assert torch.equal(again.train, first.train) and torch.equal(again.test, first.test)

    (tmp_path / "cache" / names[1]).write_bytes(b"\x93NUMPY truncated")
    rebuilt = data.load("mnist", DATA_ROOT, (64, 32))
    assert torch.equal(rebuilt.train, first.train)
    assert np.load(tmp_path / "cache" / names[1]).shape == (60000, 1, 32, 32)


@needs_mnist
def test_an_unwritable_cache_only_costs_the_resize(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BENCH_CACHE", str(blocker / "cache"))
    assert data.load("mnist", DATA_ROOT, (64, 32)).train.shape == (64, 1, 32, 32)


@needs_mnist
def test_a_corrupt_source_file_is_caught_even_with_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    data.load("mnist", DATA_ROOT, (64, 32))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_NAMES:
        (folder / name).write_bytes((MNIST_DIR / name).read_bytes())
    blob = bytearray((folder / "train-images-idx3-ubyte.gz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is corrupt"):
        data.load("mnist", tmp_path / "data", (64, 32))


@pytest.mark.fast
@needs_mnist
def test_mnist_verify_passes():
    data.verify("mnist", DATA_ROOT)


@pytest.mark.fast
@needs_mnist
def test_mnist_corrupt_file(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    link_mnist(tmp_path / "mnist", skip=name)
    blob = bytearray((MNIST_DIR / name).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "mnist" / name).write_bytes(bytes(blob))
    for call in (data.verify, data.load):
        with pytest.raises(DataError, match=f"{name}.*corrupt"):
            call("mnist", tmp_path)


@pytest.mark.fast
@needs_mnist
def test_mnist_uncompressed_copy_verifies(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    link_mnist(tmp_path / "mnist", skip=name)
    (tmp_path / "mnist" / name.removesuffix(".gz")).write_bytes(gzip.decompress((MNIST_DIR / name).read_bytes()))
    data.verify("mnist", tmp_path)


@pytest.mark.fast
@needs_mnist
def test_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    link_mnist(raw)
    data.verify("mnist", tmp_path)


@pytest.mark.fast
def test_mnist_missing_folder(tmp_path):
    with pytest.raises(DataError) as err:
        data.verify("mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "mnist") in message and "\n" not in message
    for name in MNIST_NAMES:
        assert name in message


@pytest.mark.fast
def test_mnist_download_failure_reported(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.delenv("BENCH_NO_DOWNLOAD")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="download failed: Error downloading.*no network"):
        data.load("mnist", tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []


@pytest.mark.fast
@needs_mnist
def test_mnist_download_moves_files(tmp_path, monkeypatch):
    import torchvision.datasets

    def fake_download(root, download):
        link_mnist(Path(root) / "MNIST" / "raw")

    monkeypatch.delenv("BENCH_NO_DOWNLOAD")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    data.verify("mnist", tmp_path)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(MNIST_NAMES)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.fast
@needs_debian_fashion
def test_fashion_from_debian(tmp_path):
    data.verify("fashion-mnist", tmp_path)
    ds = data.load("fashion-mnist", tmp_path, (50, 10))
    assert ds.train.shape == (50, 1, 32, 32) and ds.test.shape == (10, 1, 32, 32)
    assert ds.train.dtype == torch.uint8 and ds.name == "fashion-mnist"


@pytest.mark.fast
def test_fashion_missing_names_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="dataset-fashion-mnist") as err:
        data.verify("fashion-mnist", tmp_path)
    assert str(tmp_path / "fashion-mnist") in str(err.value)


# --------------------------------------------------------------------------- 3D Chairs


def chair_colour(model: int) -> tuple[int, int, int]:
    return (20 * model + 7, 200 - 11 * model, 90 + 3 * model)


def grey(rgb: tuple[int, int, int]) -> int:
    """ITU-R 601-2 luma, the conversion Pillow documents for mode "L"."""
    return round((rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000)


@pytest.fixture(scope="module")
def chairs_root(tmp_path_factory):
    """12 chair models x 3 renders of 600x600 RGB PNG; every render of model i has one colour."""
    root = tmp_path_factory.mktemp("chairs_data")
    for model in range(12):
        renders = root / "chairs" / "rendered_chairs" / f"model_{model:02d}" / "renders"
        renders.mkdir(parents=True)
        for view in range(3):
            Image.new("RGB", (600, 600), chair_colour(model)).save(renders / f"image_{view:03d}_p020_t000.png")
    (root / "chairs" / "rendered_chairs" / "all_chair_names.mat").write_bytes(b"")
    return root


@pytest.mark.fast
def test_chairs_load(chairs_root):
    data.verify("chairs", chairs_root)
    ds = data.load("chairs", chairs_root)
    assert ds.train.shape == (33, 1, 64, 64) and ds.test.shape == (3, 1, 64, 64)
    assert ds.train.dtype == torch.uint8 and ds.channels == 1 and ds.image_size == 64
    train_models = [m for m in range(12) if m != 9]
    expected = torch.tensor([grey(chair_colour(m)) for m in train_models for _ in range(3)], dtype=torch.uint8)
    assert torch.equal(ds.train.amin(dim=(1, 2, 3)), expected)
    assert torch.equal(ds.train.amax(dim=(1, 2, 3)), expected)
    assert (ds.test == grey(chair_colour(9))).all()


@pytest.mark.fast
def test_chairs_subset(chairs_root):
    ds = data.load("chairs", chairs_root, (4, 2))
    assert ds.train.shape == (4, 1, 64, 64) and ds.test.shape == (2, 1, 64, 64)


@pytest.mark.fast
def test_chairs_missing_and_too_few(tmp_path):
    with pytest.raises(DataError, match="rendered_chairs"):
        data.verify("chairs", tmp_path)
    (tmp_path / "chairs" / "rendered_chairs" / "one" / "renders").mkdir(parents=True)
    with pytest.raises(DataError, match="at least 10 model folders"):
        data.load("chairs", tmp_path)


# --------------------------------------------------------------------------- CelebA


def face_colour(number: int) -> tuple[int, int, int]:
    return (40 + 17 * number, 230 - 13 * number, 60 + 9 * number)


def write_faces(folder: Path, numbers) -> None:
    """178x218 JPEGs, black outside the centre 148x148 crop and one colour inside."""
    folder.mkdir(parents=True)
    for number in numbers:
        img = Image.new("RGB", (178, 218), (0, 0, 0))
        img.paste(Image.new("RGB", (148, 148), face_colour(number % 100)), (15, 35))
        img.save(folder / f"{number:06d}.jpg", quality=100, subsampling=0)


@pytest.mark.fast
def test_celeba_with_partition_file(tmp_path):
    write_faces(tmp_path / "celeba" / "img_align_celeba", range(1, 11))
    lines = [f"{n:06d}.jpg {0 if n <= 6 else 1 if n <= 8 else 2}" for n in range(1, 11)]
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    data.verify("celeba", tmp_path)
    ds = data.load("celeba", tmp_path)
    assert ds.train.shape == (6, 3, 64, 64) and ds.test.shape == (2, 3, 64, 64)
    assert ds.train.dtype == torch.uint8 and ds.channels == 3 and ds.image_size == 64
    # the crop removes every black pixel; JPEG leaves a few levels of error at the edges
    for images, numbers in ((ds.train, range(1, 7)), (ds.test, (9, 10))):
        colours = torch.tensor([face_colour(n) for n in numbers], dtype=torch.float32)[:, :, None, None]
        assert (images.float() - colours).abs().max() <= 8
        assert (images[:, :, 16:48, 16:48].float() - colours).abs().max() <= 2
    assert data.load("celeba", tmp_path, (2, 1)).train.shape == (2, 3, 64, 64)


@pytest.mark.fast
def test_celeba_split_by_number_without_partition_file(tmp_path):
    numbers = (1, 2, 162770, 162771, 182637, 182638, 200000)
    write_faces(tmp_path / "celeba" / "img_align_celeba", numbers)
    ds = data.load("celeba", tmp_path)
    assert ds.train.shape[0] == 3 and ds.test.shape[0] == 2
    assert abs(int(ds.test[1, 0, 32, 32]) - face_colour(200000 % 100)[0]) <= 2


@pytest.mark.fast
def test_celeba_errors(tmp_path):
    with pytest.raises(DataError, match="img_align_celeba"):
        data.verify("celeba", tmp_path)
    write_faces(tmp_path / "celeba" / "img_align_celeba", (1, 200000))
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DataError, match="200000.jpg"):
        data.verify("celeba", tmp_path)


# --------------------------------------------------------------------------- dSprites


def decode(index: int) -> list[int]:
    """Mixed-radix digits of a grid index, last factor fastest."""
    digits = []
    for size in reversed(data.DSPRITES_FACTOR_SIZES):
        digits.append(index % size)
        index //= size
    return digits[::-1]


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    return data.load("dsprites", tmp_path_factory.mktemp("no_dsprites_file"), (3000, 500))


@pytest.mark.fast
def test_dsprites_split():
    train, test = data.dsprites_split()
    assert (len(train), len(test)) == (663552, 73728)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(737280))
    again_train, _ = data.dsprites_split()
    assert np.array_equal(train, again_train)


@pytest.mark.fast
def test_dsprites_factors_match_grid(sprites):
    train_idx, test_idx = data.dsprites_split()
    assert sprites.factor_sizes == (3, 6, 40, 32, 32)
    assert sprites.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    for factors, idx in ((sprites.train_factors, train_idx), (sprites.test_factors, test_idx)):
        assert factors.dtype == torch.int64
        assert ((factors >= 0) & (factors < torch.tensor(sprites.factor_sizes))).all()
        for row in (0, 1, len(factors) - 1):
            assert factors[row].tolist() == decode(int(idx[row]))
    assert sprites.train.shape == (3000, 1, 64, 64) and sprites.test.shape == (500, 1, 64, 64)
    assert sprites.train.dtype == torch.uint8
    assert set(torch.unique(sprites.train).tolist()) == {0, 255}


@pytest.mark.fast
def test_dsprites_images_match_factors(sprites):
    assert torch.equal(sprites.train[:50], data.render_dsprites(sprites.train_factors[:50].numpy()))


@pytest.mark.fast
def test_dsprites_deterministic(sprites, tmp_path):
    again = data.load("dsprites", tmp_path, (3000, 500))
    assert torch.equal(again.train, sprites.train) and torch.equal(again.test_factors, sprites.test_factors)


def test_dsprites_default_subset(tmp_path):
    ds = data.load("dsprites", tmp_path, (None, 20))
    assert ds.train.shape[0] == 100_000 and ds.test.shape[0] == 20


@pytest.mark.fast
def test_dsprites_position_shifts():
    base = np.array([[s, 5, o, 0, 0] for s in range(3) for o in (0, 7, 13, 30)])
    images = data.render_dsprites(base)
    for dx, dy in ((1, 0), (3, 0), (31, 0), (0, 1), (0, 31), (31, 31)):
        moved = base.copy()
        moved[:, 3] += dx
        moved[:, 4] += dy
        # no pixel lost or wrapped: a shift of the image is the exact translation
        assert torch.equal(data.render_dsprites(moved), torch.roll(images, shifts=(dy, dx), dims=(2, 3)))


@pytest.mark.fast
def test_dsprites_scale_and_shape():
    grid = np.array([[s, c, o, 10, 20] for s in range(3) for c in range(6) for o in (0, 11, 25)])
    lit = (data.render_dsprites(grid) > 0).sum(dim=(1, 2, 3)).reshape(3, 6, 3)
    assert (lit[:, 1:] > lit[:, :-1]).all()
    images = data.render_dsprites(np.array([[s, 3, 0, 16, 16] for s in range(3)]))
    assert not torch.equal(images[0], images[1])
    assert not torch.equal(images[1], images[2])
    assert not torch.equal(images[0], images[2])


@pytest.mark.fast
def test_dsprites_real_file_used(tmp_path):
    n = 50
    rng = np.random.default_rng(1)
    imgs = (rng.random((n, 64, 64)) < 0.3).astype(np.uint8)
    classes = np.zeros((n, 6), dtype=np.int64)
    classes[:, 1:] = np.stack(np.unravel_index(rng.choice(3**5, n, replace=False), (3,) * 5), axis=1)  # distinct, as in the real file
    (tmp_path / "dsprites").mkdir()
    np.savez_compressed(tmp_path / "dsprites" / data.DSPRITES_FILE, imgs=imgs, latents_classes=classes)
    data.verify("dsprites", tmp_path)
    ds = data.load("dsprites", tmp_path)
    train_idx, test_idx = data.dsprites_split(n)
    assert torch.equal(ds.train[:, 0], torch.from_numpy(imgs[train_idx] * 255))
    assert torch.equal(ds.test_factors, torch.from_numpy(classes[test_idx, 1:]))
    # The metrics query the generative process: images by factors, looked up in the file.
    truth = data.ground_truth("dsprites", tmp_path)
    # The images are read at the first lookup, not when the ground truth is made: the file rewritten
    # in between is the one looked up.
    np.savez_compressed(tmp_path / "dsprites" / data.DSPRITES_FILE, imgs=1 - imgs, latents_classes=classes)
    assert torch.equal(truth.images(classes[::-1, 1:])[:, 0], torch.from_numpy((1 - imgs[::-1]) * 255))
    with pytest.raises(DataError, match="lacks the image of factors \\[0, 0, 0, 0, 5\\]"):
        truth.images(np.array([[0, 0, 0, 0, 5]]))


@pytest.mark.fast
def test_dsprites_ground_truth_draws_the_training_images(sprites, tmp_path):
    truth = data.ground_truth("dsprites", tmp_path)
    assert truth.factor_sizes == (3, 6, 40, 32, 32) and truth.factor_names[0] == "shape"
    assert torch.equal(truth.images(sprites.test_factors[:40].numpy()), sprites.test[:40])
    assert data.ground_truth("mnist", tmp_path) is None


@pytest.mark.fast
def test_dsprites_bad_file(tmp_path):
    (tmp_path / "dsprites").mkdir()
    (tmp_path / "dsprites" / data.DSPRITES_FILE).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable"):
        data.verify("dsprites", tmp_path)
