"""Smoke tests on the real data in ../shared/data (skipped when it is absent)."""

import numpy as np
import pytest

from conftest import SHARED_DATA

HEAD = SHARED_DATA / "fer2013" / "fer2013_head1167.csv.gz"
TEST_IMAGES = SHARED_DATA / "fer2013_images" / "test"


@pytest.mark.skipif(not HEAD.is_file(), reason="../shared/data not present")
def test_reader_on_the_exact_original_excerpt():
    from fer_lightning.data.fer2013 import read_fer2013_csv

    images, labels, usage = read_fer2013_csv(HEAD)
    assert images.shape == (1167, 48, 48)
    # label counts given in shared/data/README.md for this excerpt
    assert np.bincount(labels).tolist() == [177, 14, 189, 272, 182, 141, 192]
    assert set(usage.tolist()) == {0}


@pytest.mark.skipif(not TEST_IMAGES.is_dir(), reason="../shared/data not present")
def test_image_folder_on_the_fer2013_test_jpgs():
    import torch

    from fer_lightning.data.folder import read_image_folder

    images, labels = read_image_folder(TEST_IMAGES)
    assert images.shape == (7178, 1, 48, 48)
    # angry disgust fear happy sad surprise neutral (FER2013 order), from the data README
    assert torch.bincount(labels).tolist() == [958, 111, 1024, 1774, 1247, 831, 1233]


@pytest.mark.skipif(not HEAD.is_file(), reason="../shared/data not present")
def test_training_stage_on_real_faces(tmp_path, tiny_pipeline):
    """The train stage end to end on real FER2013 pixels: the excerpt's rows split into
    Training / PublicTest / PrivateTest by the test."""
    import gzip

    from fer_lightning.pipeline.runner import run_pipeline
    from fer_lightning.pipeline.spec import load_pipeline

    lines = gzip.open(HEAD, "rt").read().splitlines()
    out = [lines[0]] + [line.rsplit(",", 1)[0] + "," + ("Training", "PublicTest", "PrivateTest")[i % 3]
                        for i, line in enumerate(lines[1:601])]
    csv = tmp_path / "fer_small.csv"
    csv.write_text("\n".join(out) + "\n")
    pipe = load_pipeline(tiny_pipeline, data=str(csv), sets=[f"data.init_args.cache_dir={tmp_path / 'cache'}"])
    statuses = run_pipeline(pipe, tmp_path / "runs", only=["cnn2"], log=lambda *_: None)
    assert statuses["cnn2"] == "run"
    import json

    metrics = json.loads((tmp_path / "runs" / "cnn2" / "metrics.json").read_text())
    assert metrics["private_test"]["n"] == 200 and metrics["public_test"]["n"] == 200
    assert 0.0 <= metrics["test"]["acc"] <= 1.0


JAFFE = SHARED_DATA / "jaffe"


@pytest.mark.skipif(not JAFFE.is_dir(), reason="../shared/data not present")
def test_jaffe_paper_split_and_leave_one_subject_out():
    import torch

    from fer_lightning.data import JAFFEDataModule

    dm = JAFFEDataModule(str(JAFFE))
    dm.setup()
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 133, "val": 23, "test": 57}
    # per expression in the data README: AN 30, DI 29, FE 32, HA 31, NE 30, SA 31, SU 30
    all_labels = torch.cat([v[1] for v in dm.splits.values()])
    assert torch.bincount(all_labels).tolist() == [30, 29, 32, 31, 31, 30, 30]
    test_counts = torch.bincount(dm.splits["test"][1], minlength=7)
    assert test_counts.min() >= 7 and test_counts.max() <= 9  # stratified: 57/213 of each class
    loso = JAFFEDataModule(str(JAFFE), split="loso", fold=0)  # KA: 23 images (palette TIFFs)
    loso.setup()
    assert len(loso.splits["test"][1]) == 23
    assert len(loso.splits["train"][1]) + len(loso.splits["val"][1]) == 190
