"""Papers 002 and 004 (models, pipelines), the evaluate command/stage and predict on photos."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_pipeline_cli, write_fer_csv
from fer_lightning import CLASS_NAMES


def test_vgg1x1_follows_table_1():
    from fer_lightning.models import VGG1x1

    net = VGG1x1().eval()
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [1, 5, 3, 3] and [c.out_channels for c in convs] == [32, 32, 64, 128]
    fcs = [m for m in net.features if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(3200, 2048), (2048, 1024)]
    assert net(torch.randn(2, 1, 48, 48)).shape == (2, 7)


def test_attention_cnn_shapes_and_neutral_attention():
    from fer_lightning.models.attention_cnn import ChannelAttention, MultiScaleAttentionCNN

    net = MultiScaleAttentionCNN(input_size=32, stream_widths=(4, 8), res_widths=(8, 8), fc=(16, 8)).eval()
    assert net(torch.randn(3, 1, 48, 48)).shape == (3, 7) and net.features(torch.randn(3, 1, 48, 48)).shape == (3, 8)
    att = ChannelAttention(6)
    w = att(torch.randn(2, 6, 4, 4))
    assert w.shape == (2, 6, 1, 1) and torch.allclose(w.sum(1), torch.full((2, 1, 1), 6.0))


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fer_lightning", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _write_faces_folder(root, classes):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


PIPELINES = """
base: {base}
name: tiny
data:
  init_args: {{csv_path: {csv}, batch_size: 16, eval_batch_size: 64}}
trainer: {{max_epochs: 1, accelerator: cpu, enable_model_summary: false}}
stages:
  {model}: {{params: {{model: {{net: {{init_args: {args}}}}}}}}}
  {extra}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both paper pipelines at tiny size on a tiny FER2013 CSV (one module-wide run)."""
    tmp = tmp_path_factory.mktemp("papers")
    rng = np.random.default_rng(0)
    rows = [(i % 7, rng.integers(0, 256, 48 * 48), u) for u, n in
            (("Training", 56), ("PublicTest", 21), ("PrivateTest", 21)) for i in range(n)]
    csv_path = write_fer_csv(tmp / "fer.csv", rows)
    folder = _write_faces_folder(tmp / "faces", {"Happiness": 3, "anger": 2, "contempt": 4})
    votes = tmp / "fer2013new.csv"   # FER+ votes: every face neutral, but every 5th not a face
    votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                     + "".join(f"{u},x.png,{0 if i % 5 == 0 else 10},0,0,0,0,0,0,0,0,{10 if i % 5 == 0 else 0}\n"
                               for i, (_, _, u) in enumerate(rows)))
    p2 = tmp / "p2.yaml"
    p2.write_text(PIPELINES.format(
        base=ROOT / "configs/pipelines/fer2013_vgg1x1.yaml", csv=csv_path, model="vgg1x1",
        args="{widths: [4, 4, 8, 8], fc: [16, 8]}",
        extra=f"cross: {{kind: evaluate, inputs: {{models: [vgg1x1.checkpoint]}}, params: {{data: {folder}}}}}\n"
              f"  ferplus: {{kind: evaluate, inputs: {{models: [vgg1x1.checkpoint]}}, "
              f"params: {{data: {csv_path}, split: private_test, ferplus: {votes}}}}}"))
    p4 = tmp / "p4.yaml"
    p4.write_text(PIPELINES.format(base=ROOT / "configs/pipelines/fer2013_attention.yaml", csv=csv_path,
                                   model="attention_cnn",
                                   args="{input_size: 32, stream_widths: [4, 8], res_widths: [8, 8], fc: [16, 8]}",
                                   extra=""))
    run_pipeline_cli(p2, tmp / "out2")
    run_pipeline_cli(p4, tmp / "out4")
    return {"tmp": tmp, "csv": csv_path, "folder": folder, "votes": votes, "rows": rows, "vgg": tmp / "out2/vgg1x1/model.ckpt",
            "att": tmp / "out4/attention_cnn/model.ckpt", "out2": tmp / "out2", "out4": tmp / "out4"}


def test_paper_002_and_004_pipelines_report_beside_the_paper(trained):
    r2 = json.loads((trained["out2"] / "report/report.json").read_text())
    assert r2["tables"][0]["rows"][0]["paper"]["acc"] == 72.92
    assert r2["tables"][0]["rows"][0]["ours"]["private_test"]["acc"] is not None
    r4 = json.loads((trained["out4"] / "report/report.json").read_text())
    assert r4["tables"][0]["rows"][0]["paper"]["acc"] == 96.1
    assert "not available" in (trained["out4"] / "report/report.md").read_text()


def test_evaluate_stage_counts_classes_the_model_cannot_predict(trained):
    m = json.loads((trained["out2"] / "cross/metrics.json").read_text())
    assert m["n"] == 5 and m["excluded_classes"] == {"contempt": 4}
    assert (trained["out2"] / "cross/confusion.png").stat().st_size > 1000
    assert "contempt: 4 images" in (trained["out2"] / "cross/report.md").read_text()


def test_evaluate_scores_a_fer2013_split_against_the_ferplus_votes(trained, tmp_path):
    private = [i for i, r in enumerate(trained["rows"]) if r[2] == "PrivateTest"]
    n_dropped = sum(i % 5 == 0 for i in private)
    m = json.loads((trained["out2"] / "ferplus/metrics.json").read_text())   # the evaluate stage
    assert m["n"] == 21 - n_dropped and m["excluded_classes"] == {"contempt, unknown or not a face (FER+)": n_dropped}
    support = np.asarray(m["confusion"]).sum(1)
    assert support[CLASS_NAMES.index("neutral")] == m["n"]   # scored against FER+, not the original labels
    out = tmp_path / "ev"
    _cli("evaluate", "--model", trained["vgg"], "--data", trained["csv"], "--split", "private_test",
         "--ferplus", trained["votes"], "--out", out)
    assert json.loads((out / "metrics.json").read_text())["confusion"] == m["confusion"]
    bad = _cli("evaluate", "--model", trained["vgg"], "--data", trained["folder"], "--ferplus", trained["votes"],
               check=False)
    assert bad.returncode == 2 and "is not a FER2013 CSV" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_command_ensemble_with_tta_on_a_fer2013_split(trained, tmp_path):
    out = tmp_path / "ev"
    _cli("evaluate", "--model", trained["vgg"], "--model", trained["att"], "--fusion", "max", "--tta", "flip",
         "--data", trained["csv"], "--split", "private_test", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 21 and m["fusion"] == "max" and m["tta"] == "flip"
    assert sum(map(sum, m["confusion"])) == 21
    bad = _cli("evaluate", "--model", tmp_path / "none.ckpt", "--data", trained["csv"], check=False)
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "a_file").write_text("x")   # --out naming a file: one line, before any work
    for command in (["evaluate", "--data", trained["csv"]], ["predict", trained["csv"]]):
        bad = _cli(*command, "--model", trained["vgg"], "--out", tmp_path / "a_file", check=False)
        assert bad.returncode == 2 and "a_file: cannot write outputs there" in bad.stderr, bad.stderr
    for unlabelled in ("synthetic", tmp_path / "photo.jpg"):   # no labels to score against
        bad = _cli("evaluate", "--model", trained["vgg"], "--data", unlabelled, check=False)
        assert bad.returncode == 2 and "evaluate needs labelled faces" in bad.stderr and "use fer-lightning predict" \
            in bad.stderr and "'synthetic'" not in bad.stderr, bad.stderr


def test_a_full_disk_while_evaluate_writes_is_one_line(trained, tmp_path, monkeypatch, capsys):
    import errno

    import fer_lightning.evaluate
    from fer_lightning.cli import main

    def full(path, *_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fer_lightning.evaluate, "atomic_write_json", full)
    assert main(["evaluate", "--model", str(trained["vgg"]), "--data", str(trained["csv"]),
                 "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'ev' / 'metrics.json'}: No space left on device") \
        and err.count("\n") == 1


def test_predict_on_photos_with_and_without_faces(trained, tmp_path):
    import imageio.v3 as iio
    import skimage.data

    photos = tmp_path / "photos"
    photos.mkdir()
    iio.imwrite(photos / "astronaut.jpg", skimage.data.astronaut())   # one face
    iio.imwrite(photos / "coffee.png", skimage.data.coffee())          # none
    iio.imwrite(photos / "astronaut.gif", skimage.data.astronaut())   # a palette image, one face
    (photos / "broken.jpg").write_bytes(b"not an image")
    whole = (photos / "astronaut.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(whole[:len(whole) // 2])           # a download cut short
    (photos / "notes.txt").write_text("not a photo")                   # left out, with a note
    (photos / "._astronaut.jpg").write_bytes(b"macOS metadata")         # hidden: left out
    out = tmp_path / "pred"
    proc = _cli("predict", "--model", trained["vgg"], "--model", trained["att"], photos, photos / "astronaut.jpg",
                "--out", out)   # a photo named twice is predicted once
    assert "unreadable" in proc.stderr and "1 file(s) that are not images left out (e.g. notes.txt)" in proc.stderr
    listed = list(csv.DictReader((out / "predictions.csv").open()))
    rows = {r["file"].rsplit("/", 1)[1]: r for r in listed}
    assert sorted(rows) == ["astronaut.gif", "astronaut.jpg", "broken.jpg", "coffee.png", "cut.jpg"] and len(listed) == 5
    assert rows["coffee.png"]["label"] == "no_face" and rows["broken.jpg"]["label"] == "unreadable"
    assert rows["cut.jpg"]["label"] == "unreadable" and "cut.jpg: unreadable image" in proc.stderr
    assert rows["astronaut.gif"]["label"] != "no_face"
    face = rows["astronaut.jpg"]
    assert face["label"] in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    probs = [float(face[f"p_{c}"]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]
    assert abs(sum(probs) - 1) < 1e-3 and 150 < int(face["x"]) < 200   # the astronaut's face box
    assert (out / "annotated/astronaut.jpg").stat().st_size > 10_000


def test_a_jpeg_cut_short_is_told_from_a_whole_one_with_a_thumbnail():
    """OpenCV decodes a truncated JPEG as far as it goes; the missing end marker after the last
    scan gives it away — and an EXIF thumbnail's own end marker must not hide it."""
    import cv2
    import skimage.data

    from fer_lightning.photos import jpeg_cut_short

    main = cv2.imencode(".jpg", skimage.data.astronaut())[1].tobytes()
    thumb = cv2.imencode(".jpg", skimage.data.astronaut()[::8, ::8])[1].tobytes()
    exif = b"Exif\0\0" + thumb   # a thumbnail (SOS ... EOI) inside APP1, before the main scans
    with_thumb = main[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + main[2:]
    assert not jpeg_cut_short(main) and not jpeg_cut_short(with_thumb)
    assert jpeg_cut_short(main[:-100]) and jpeg_cut_short(with_thumb[:-100])
    png = cv2.imencode(".png", skimage.data.astronaut())[1].tobytes()
    assert not jpeg_cut_short(png[:1000])   # other formats: OpenCV itself refuses a cut file


def test_predict_in_parallel_gives_the_rows_of_one_worker(trained, tmp_path):
    """Photos are scanned on several threads (a cascade each); rows keep the files' order."""
    import imageio.v3 as iio
    import skimage.data

    from fer_lightning.photos import predict_photos

    photos = tmp_path / "photos"
    photos.mkdir()
    face, no_face = skimage.data.astronaut(), skimage.data.coffee()
    for i in range(8):
        iio.imwrite(photos / f"p{i}.jpg", (face if i % 3 else no_face)[::1 + i % 2, ::1 + i % 2])
    one = predict_photos([trained["vgg"]], [photos], tmp_path / "one", annotate=False, workers=1)
    many = predict_photos([trained["vgg"]], [photos], tmp_path / "many", annotate=False, workers=3)
    assert one == many and [r["label"] for r in one].count("no_face") == 3
    assert (tmp_path / "one/predictions.csv").read_bytes() == (tmp_path / "many/predictions.csv").read_bytes()


def test_annotated_copies_of_photos_with_the_same_stem_do_not_overwrite_each_other():
    from pathlib import Path

    from fer_lightning.photos import annotated_names

    files = [Path("a/x.jpg"), Path("b/x.jpg"), Path("x.png"), Path("y.jpg")]
    assert list(annotated_names(files).values()) == ["x.jpg", "x_2.jpg", "x_3.jpg", "y.jpg"]


def test_evaluate_with_face_crop_cuts_photos_to_their_faces(trained, tmp_path):
    """Folders of whole photos (JAFFE, your own): --face-crop cuts each to its largest face; a
    photo without one is used whole and counted; FER2013's faces are already cropped (an error)."""
    import imageio.v3 as iio
    import skimage.data

    from fer_lightning.data.folder import read_image_folder

    photos = tmp_path / "photos"
    (photos / "happy").mkdir(parents=True)
    (photos / "neutral").mkdir()
    iio.imwrite(photos / "happy/astronaut.png", skimage.data.astronaut())
    iio.imwrite(photos / "neutral/coffee.png", skimage.data.coffee())
    no_face = []
    cut, _ = read_image_folder(photos, 48, face_crop=True, no_face=no_face)
    whole, _ = read_image_folder(photos, 48)
    assert no_face == [str(photos / "neutral/coffee.png")]
    assert torch.equal(cut[1], whole[1]) and not torch.equal(cut[0], whole[0])

    out = tmp_path / "ev"
    _cli("evaluate", "--model", trained["vgg"], "--data", photos, "--face-crop", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 2 and m["face_crop"] and m["no_face_found"] == 1
    assert "none found in 1 images" in (out / "report.md").read_text()
    bad = _cli("evaluate", "--model", trained["vgg"], "--data", trained["csv"], "--face-crop",
               "--out", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "already cropped" in bad.stderr and not (tmp_path / "bad").exists()


def test_a_device_this_machine_lacks_is_a_usage_error():
    """``--device`` of evaluate and predict: argparse's one-line error, not CUDA's traceback."""
    import argparse

    from fer_lightning.evaluate import device_arg

    n = torch.cuda.device_count()
    assert device_arg("cpu") == "cpu"
    with pytest.raises(argparse.ArgumentTypeError, match=f"'cuda:{n}': torch finds {n} CUDA GPU"):
        device_arg(f"cuda:{n}")
    with pytest.raises(argparse.ArgumentTypeError, match="'gpu0' is not a torch device"):
        device_arg("gpu0")


def test_evaluate_on_kaggles_train_and_test_folders_scores_one_split(trained, tmp_path):
    from fer_lightning.errors import UserError
    from fer_lightning.evaluate import evaluate

    root = tmp_path / "kaggle"
    _write_faces_folder(root / "train", {"happy": 3})
    _write_faces_folder(root / "test", {"sad": 2, "angry": 1})
    support = {split: np.asarray(evaluate([str(trained["vgg"])], str(root), tmp_path / str(split),
                                          split=split)["confusion"]).sum(1).tolist()
               for split in (None, "train")}
    assert support == {None: [1, 0, 0, 0, 2, 0, 0], "train": [0, 0, 0, 3, 0, 0, 0]}   # test by default
    with pytest.raises(UserError, match="holds the splits train and test"):
        evaluate([str(trained["vgg"])], str(root), tmp_path / "val", split="val")
