import functools
import gzip

import numpy as np
import pytest
import torch

from conftest import write_fer_csv
from fer_lightning.data import BatchAugment, FER2013DataModule, ImageFolderDataModule, SyntheticFacesDataModule
from fer_lightning import MEAN, STD
from fer_lightning.data.base import OrderedBatches, ShuffledBatches, normalise
from fer_lightning.data.fer2013 import load_fer2013, read_fer2013_csv
from fer_lightning.errors import UserError

RNG = np.random.default_rng(0)


def _rows(n_per_usage=14):
    rows = []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for i in range(n_per_usage):
            rows.append((i % 7, RNG.integers(0, 256, 2304), usage))
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_reader_plain_and_gzip(tmp_path, suffix):
    rows = _rows()
    path = write_fer_csv(tmp_path / f"f{suffix}", rows)
    images, labels, usage = read_fer2013_csv(path)
    assert images.shape == (42, 48, 48) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[5].ravel(), rows[5][1])
    assert labels.tolist() == [r[0] for r in rows]
    assert usage.tolist() == [0] * 14 + [1] * 14 + [2] * 14
    # saved by Excel as "CSV UTF-8": a byte-order mark before the header, Windows line ends
    excel = tmp_path / "excel.csv"
    text = (gzip.decompress(path.read_bytes()) if suffix == ".csv.gz" else path.read_bytes()).decode()
    excel.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    again = read_fer2013_csv(excel)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)


@pytest.mark.parametrize("content, message", [
    ("", "file is empty"),
    ("emotion,pixel,Usage\n", "missing column(s) pixels"),
    ("emotion,pixels,Usage\n", "no data rows"),
    ("emotion,pixels,Usage\n0,1 2 3,Training\n", "line 2: pixels has 3 values, expected 2304"),
    ("emotion,pixels,Usage\n0," + " ".join(["1"] * 2303) + " x,Training\n", "line 2: pixels contain a non-integer"),
    ("emotion,pixels,Usage\n9," + " ".join(["1"] * 2304) + ",Training\n", "line 2: unknown emotion id 9"),
    ("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Validation\n", "line 2: unknown Usage 'Validation'"),
])
def test_reader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_fer2013_csv(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_reader_takes_any_whitespace_and_never_shifts_pixels_between_rows(tmp_path):
    """A well-formed file is parsed in one numpy call over all rows; other spacing goes row by row.
    A double space in one row and an extra value in the next must not cancel out."""
    rows = _rows(2)
    ok = [(e, " ".join(map(str, p)), u) for e, p, u in rows]
    ok[1] = (ok[1][0], "  " + ok[1][1].replace(" ", "\t", 5), ok[1][2])  # leading blanks, tabs
    images, _, _ = read_fer2013_csv(write_fer_csv(tmp_path / "spaced.csv", ok))
    np.testing.assert_array_equal(images.reshape(len(rows), -1), np.stack([r[1] for r in rows]))
    shifted = list(ok)
    shifted[2] = (0, ok[2][1].replace(" ", "  ", 1), "Training")          # 2304 values, one double space
    shifted[3] = (0, ok[3][1].rsplit(" ", 1)[0] + " 7 7", "Training")     # 2305 values
    with pytest.raises(UserError, match=r"line 5: pixels has 2305 values, expected 2304"):
        read_fer2013_csv(write_fer_csv(tmp_path / "shifted.csv", shifted))
    with pytest.raises(UserError, match=r"line 4: pixel values must lie in 0..255"):
        read_fer2013_csv(write_fer_csv(tmp_path / "big.csv", ok[:2] + [(0, ok[2][1].rsplit(" ", 1)[0] + " 256", "Training")]))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_fer2013_csv(tmp_path / "nope.csv")


def test_fer2013_datamodule_splits_and_cache(tmp_path):
    path = write_fer_csv(tmp_path / "f.csv", _rows(28))
    dm = FER2013DataModule(str(path), val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": 21, "val": 7, "test": 56, "public_test": 28, "private_test": 28}
    assert torch.bincount(dm.splits["val"][1]).tolist() == [1] * 7  # stratified
    assert len(list((tmp_path / "cache").glob("fer2013-*.pt"))) == 1
    again = load_fer2013(path, tmp_path / "cache")  # from the cache
    assert again["images"].shape == (84, 1, 48, 48)
    dm2 = FER2013DataModule(str(path), val_split="PublicTest", cache_dir=str(tmp_path / "cache"))
    dm2.setup()
    assert torch.equal(dm2.splits["val"][0], dm2.splits["public_test"][0])


def test_a_damaged_cache_in_a_read_only_folder_is_parsed_around(tmp_path, monkeypatch):
    import pathlib

    path = write_fer_csv(tmp_path / "f.csv", _rows(7))
    whole = load_fer2013(path, tmp_path / "cache")
    cached, = (tmp_path / "cache").glob("fer2013-*.pt")
    cached.write_bytes(b"damaged")

    def read_only(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    monkeypatch.setattr("fer_lightning.data.fer2013.atomic_write_bytes", read_only)
    again = load_fer2013(path, tmp_path / "cache")
    assert torch.equal(again["images"], whole["images"]) and cached.read_bytes() == b"damaged"


def test_split_without_rows_is_a_user_error(tmp_path):
    rows = [r for r in _rows() if r[2] != "PrivateTest"]
    path = write_fer_csv(tmp_path / "f.csv", rows)
    with pytest.raises(UserError, match="no rows with Usage 'PrivateTest'"):
        FER2013DataModule(str(path), cache_dir=str(tmp_path / "c")).setup()


def test_batches_are_normalised_and_augmented_on_device():
    dm = SyntheticFacesDataModule(num_train=70, num_val=14, num_test=14, batch_size=32,
                                  augment=BatchAugment())
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (14, 1, 48, 48) and y.shape == (14,)
    out, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer attached: evaluation, no augmentation
    assert out.dtype == torch.float32 and -3 < out.mean() < 3
    # the one-kernel normalisation is (x / 255 - MEAN) / STD, from uint8 or from floats in [0, 1]
    assert torch.allclose(out, (x.float() / 255 - MEAN) / STD, atol=1e-5)
    unit = x.float() / 255
    assert torch.allclose(normalise(unit), (unit - MEAN) / STD, atol=1e-5)
    aug = BatchAugment()(x.float())
    assert aug.shape == x.shape and not torch.equal(aug, x.float())


def test_training_batches_are_prepared_in_chunks_as_one_by_one():
    """On a GPU the training loader augments and normalises several batches at once (fewer kernel
    launches); the batches must be bitwise those that preparing them one at a time gives, with
    every augmentation option on, and a batch must not span two chunks."""
    from fer_lightning.data.base import ChunkedBatches, model_input

    aug = dict(brightness=0.2, pad_crop=4, erase_p=0.5)
    dm = SyntheticFacesDataModule(num_train=100, num_val=14, num_test=14, batch_size=16,
                                  augment=BatchAugment(**aug))
    dm.setup()
    assert dm.train_dataloader().chunk == 1      # on the CPU: one batch at a time
    images, labels = dm.split("train")
    chunked = ChunkedBatches(images, labels, ShuffledBatches(100, 16, seed=0), functools.partial(
        model_input, augment=BatchAugment(**aug)), chunk=3)
    assert len(chunked) == 7
    torch.manual_seed(5)
    got = list(chunked)
    torch.manual_seed(5)
    for (x, y), (x1, y1) in zip(got, dm.train_dataloader(), strict=True):
        assert torch.equal(x, x1) and torch.equal(y, y1)
    assert [len(y) for _, y in got] == [16] * 6 + [4]
    # with group=3 (steps_per_execution) the same batches come three to a list: 3 + 3 + 1
    grouped = ChunkedBatches(images, labels, ShuffledBatches(100, 16, seed=0), functools.partial(
        model_input, augment=BatchAugment(**aug)), chunk=3, group=3)
    torch.manual_seed(5)
    groups = list(grouped)
    assert len(grouped) == 3 and [len(g) for g in groups] == [3, 3, 1]
    for (x, y), (x1, y1) in zip(got, [b for g in groups for b in g], strict=True):
        assert torch.equal(x, x1) and torch.equal(y, y1)
    # without augmentation a training batch is the normalised stored image
    plain = SyntheticFacesDataModule(num_train=100, num_val=14, num_test=14, batch_size=16, augment=None)
    plain.setup()
    x, _ = next(iter(plain.train_dataloader()))
    idx = next(iter(ShuffledBatches(100, 16, seed=0)))
    assert torch.equal(x, model_input(plain.split("train")[0][idx]))


def test_ddp_processes_share_the_training_batches_evenly():
    whole = [b.tolist() for b in ShuffledBatches(70, 16, seed=3)]          # 5 batches: 16 × 4 + 6
    ranks = [ShuffledBatches(70, 16, seed=3, rank=r, world=2) for r in (0, 1)]
    assert [len(s) for s in ranks] == [3, 3]
    got = [[b.tolist() for b in s] for s in ranks]
    assert got[0] == whole[0::2] and got[1] == whole[1::2] + whole[:1]     # padded with the first batch
    one = [b.tolist() for b in ShuffledBatches(10, 16, seed=3)]            # fewer batches than processes
    assert [[b.tolist() for b in ShuffledBatches(10, 16, seed=3, rank=r, world=3)] for r in range(3)] == [one] * 3


def test_index_batches_are_the_same_wherever_they_are_made():
    # On a GPU the epoch's order is moved there once (no blocking copy per batch); the batches
    # must be the ones the CPU would make, so results do not depend on where indices live.
    cpu = torch.device("cpu")
    host = [b.tolist() for b in ShuffledBatches(70, 32, seed=3)]
    assert host == [b.tolist() for b in ShuffledBatches(70, 32, seed=3, device=cpu)]
    assert sorted(i for b in host for i in b) == list(range(70)) and [len(b) for b in host] == [32, 32, 6]
    later = ShuffledBatches(70, 32, seed=3)
    later.set_epoch(1)
    assert [b.tolist() for b in later] != host
    assert [b.tolist() for b in OrderedBatches(70, 32, device=cpu)] == [list(range(0, 32)), list(range(32, 64)),
                                                                       list(range(64, 70))]
    dm = SyntheticFacesDataModule(num_train=70, num_val=14, num_test=14, batch_size=32)
    dm.setup()
    assert [len(y) for _, y in dm.val_dataloader()] == [14]


def test_synthetic_faces_are_deterministic_and_balanced():
    from fer_lightning.data.synthetic import make_synthetic_faces

    a, ya = make_synthetic_faces(140, seed=3)
    make_synthetic_faces.cache_clear()
    b, yb = make_synthetic_faces(140, seed=3)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.bincount(ya).tolist() == [20] * 7
    c, _ = make_synthetic_faces(140, seed=4)
    assert not torch.equal(a, c)


def test_image_folder_reads_synonyms_and_rejects_bad_input(tmp_path, capsys):
    from PIL import Image

    from fer_lightning.data.folder import read_image_folder

    for cls in ("happiness", "anger", "sad"):
        (tmp_path / "ok" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "ok" / cls / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path / "ok"), val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.splits["train"][0].shape[1:] == (1, 48, 48)
    assert sorted(torch.cat([dm.splits[s][1] for s in ("train", "val", "test")]).unique().tolist()) == [0, 3, 4]

    # what real folders hold besides faces: left out (others with a note); sub-folders are read
    (tmp_path / "ok" / "sad" / "Thumbs.db").write_bytes(b"\0" * 64)
    (tmp_path / "ok" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "ok" / "sad" / "._0.png").write_bytes(b"macOS metadata")
    (tmp_path / "ok" / "sad" / "subject2").mkdir()
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "ok" / "sad" / "subject2" / "0.png")
    x, y = read_image_folder(tmp_path / "ok")
    assert len(y) == 31 and (y == 4).sum() == 11
    out = capsys.readouterr().err
    assert "ok/sad: 1 file(s) that are not images left out (e.g. Thumbs.db)" in out and "._0" not in out
    read_image_folder(tmp_path / "ok")   # read again (each stage of a pipeline does): said once per process
    assert "Thumbs.db" not in capsys.readouterr().err
    (tmp_path / "ok" / "sad" / "Thumbs.db").unlink()
    (tmp_path / "ok" / "sad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png: unreadable image"):
        ImageFolderDataModule(str(tmp_path / "ok")).setup()
    (tmp_path / "ok" / "sad" / "broken.png").unlink()
    (tmp_path / "ok" / "contempt").mkdir()
    with pytest.raises(UserError, match="unknown class name 'contempt'"):
        ImageFolderDataModule(str(tmp_path / "ok")).setup()
    (tmp_path / "ok" / "contempt").rmdir()
    (tmp_path / "ok" / "fear").mkdir()
    (tmp_path / "ok" / "fear" / "notes.txt").write_text("to do")
    with pytest.raises(UserError, match="fear: class folder holds no images"):
        ImageFolderDataModule(str(tmp_path / "ok")).setup()


def test_a_16_bit_image_reads_as_its_8_bit_self(tmp_path):
    """Pillow's convert("L") clips 16-bit grey at 255: a 16-bit PNG face came out nearly white."""
    import cv2
    from PIL import Image

    from fer_lightning.data.folder import load_grey

    face = RNG.integers(0, 256, (48, 48)).astype(np.uint16)
    Image.fromarray(face * 257).save(tmp_path / "16bit.png")      # 0..255 spread over 0..65535
    assert Image.open(tmp_path / "16bit.png").mode.startswith("I")
    grey = load_grey(tmp_path / "16bit.png", 48)
    np.testing.assert_array_equal(grey, face)
    np.testing.assert_array_equal(grey, cv2.imread(str(tmp_path / "16bit.png"), cv2.IMREAD_GRAYSCALE))


def test_a_photo_with_exif_orientation_is_read_upright_as_predict_reads_it(tmp_path):
    import cv2
    from PIL import Image

    from fer_lightning.data.folder import load_grey

    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6                                    # a phone's "rotate 90° clockwise to view"
    Image.fromarray(RNG.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    upright = cv2.imread(str(tmp_path / "phone.jpg"), cv2.IMREAD_GRAYSCALE).astype(int)  # OpenCV turns it
    grey = load_grey(tmp_path / "phone.jpg", 48).astype(int)
    assert np.abs(grey - upright).max() <= 2          # the two libjpeg decoders round a little apart
    assert np.abs(grey - np.rot90(upright)).mean() > 30   # read as stored: another picture


@pytest.mark.parametrize("make, message", [
    (lambda: ImageFolderDataModule("faces", val_fraction=1.5), "data.val_fraction: 1.5 must lie strictly between"),
    (lambda: ImageFolderDataModule("faces", test_fraction=-0.2), "data.test_fraction: -0.2 must lie strictly"),
    (lambda: ImageFolderDataModule("faces", image_size=0), "data.image_size: 0: expected a whole number of 1"),
    (lambda: FER2013DataModule("f.csv", val_fraction=0), "data.val_fraction: 0 must lie strictly between"),
    (lambda: SyntheticFacesDataModule(eval_batch_size=0), "data.eval_batch_size: 0: expected a whole number"),
])
def test_data_options_out_of_range_are_one_line(make, message):
    """They used to fail later: an empty split, or PIL's 'height and width must be > 0'."""
    with pytest.raises(UserError) as e:
        make()
    assert str(e.value).startswith(message)


def test_jaffe_file_names(tmp_path):
    from PIL import Image

    from fer_lightning.data.jaffe import parse_jaffe_name, read_jaffe

    assert parse_jaffe_name("KA.AN1.39.tiff") == ("KA", 0)
    assert parse_jaffe_name("YM.SU3.60.tiff") == ("YM", 5)
    for i, name in enumerate(["KA.HA1.29.tiff", "KL.NE2.156.tiff"]):
        Image.fromarray(np.full((256, 256), 40 * i, dtype=np.uint8)).convert("P").save(tmp_path / name)
    x, y, subjects = read_jaffe(tmp_path)
    assert x.shape == (2, 1, 48, 48) and y.tolist() == [3, 6] and subjects.tolist() == ["KA", "KL"]
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).convert("L").save(tmp_path / "KL.HA2.157.tiff")
    no_face = []
    cut, _, _ = read_jaffe(tmp_path, face_crop=True, no_face=no_face)
    whole, _, _ = read_jaffe(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in no_face] == ["KA.HA1.29.tiff", "KL.NE2.156.tiff"]
    assert torch.equal(cut[[0, 2]], whole[[0, 2]]) and not torch.equal(cut[1], whole[1])  # files sorted
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "KA.XX1.1.tiff")
    with pytest.raises(UserError, match="KA.XX1.1.tiff: not a JAFFE file name"):
        read_jaffe(tmp_path)


def test_augmentation_grid_is_affine_grids_and_parameters_follow_the_seed():
    import torch.nn.functional as F

    from fer_lightning.data.augment import affine_grid

    theta = torch.randn(5, 2, 3)
    torch.testing.assert_close(affine_grid(theta, 7, 9), F.affine_grid(theta, [5, 1, 7, 9], align_corners=False))
    x = torch.rand(6, 1, 16, 16)
    aug = BatchAugment(pool=8, pad_crop=2, erase_p=0.5, brightness=0.2)
    torch.manual_seed(1)
    first = [aug(x), aug(x), aug(x)]   # 6 + 6 > 8: the second batch draws a new pool
    assert not torch.equal(first[0], first[1])
    torch.manual_seed(1)                # a reseed (every epoch start) redraws: the same batches again
    assert all(torch.equal(a, aug(x)) for a in first)
    torch.manual_seed(2)
    assert not torch.equal(first[0], aug(x))
    aug.reset()                         # a new fit starts afresh even under the same seed
    torch.manual_seed(1)
    assert torch.equal(first[0], aug(x))
