"""Evaluate any trained model or ensemble on any labelled faces: a FER2013 CSV split, a JAFFE
folder, or a folder of class folders (class names mapped with common synonyms). Classes the
models cannot predict (``contempt``, ...) are counted and reported, and left out of the scores.

    fer-lightning evaluate --model runs/x/cnn1/model.ckpt [--model ...] --data PATH [--split test]
                           [--fusion mean|max] [--tta flip|flip_crops|flip_crops_rotate_zoom|...] [--face-crop]
                           [--ferplus fer2013new.csv] --out DIR
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fer_lightning import CLASS_NAMES
from fer_lightning.artifacts import atomic_write_json, atomic_write_text, output_dir
from fer_lightning.data.base import normalise
from fer_lightning.ensemble import fuse_scores
from fer_lightning.errors import UserError
from fer_lightning.tta import TTA_MODES, check_tta, tta_probs


def device_arg(value: str) -> str:
    """``--device``: a torch device this machine has (argparse type: a one-line usage error)."""
    try:
        device = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a torch device (cpu, cuda, cuda:1, ...)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"'{value}': torch finds {torch.cuda.device_count()} CUDA GPU(s) "
                                         f"here; use --device cpu")
    return value


def model_image_size(net) -> int:
    """The face size a net was trained on (nets that resize internally accept any: 48)."""
    args = getattr(net, "init_args", {})
    if "image_size" in args:
        return int(args["image_size"])
    for spec in args.get("backbone_specs") or []:
        if "image_size" in spec.get("init_args", {}):
            return int(spec["init_args"]["image_size"])
    return 48


@torch.no_grad()
def predict_probs(nets, images: torch.Tensor, fusion: str = "mean", tta: str = "none",
                  batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Class probabilities ``[N, C]`` of uint8 faces ``[N, 1, H, W]``: each net sees the faces at
    its own size; ``tta`` (``fer_lightning.tta``: flip, flip_crops, flip_crops_rotate_zoom, ...)
    averages each net's probabilities over views of each face; several nets are fused with
    ``fusion`` (``mean`` or ``max``, as the score_fusion stage)."""
    try:
        check_tta(tta)
    except ValueError as e:
        raise UserError(str(e))
    per_net = []
    for net in nets:
        net.eval().to(device)
        size, out = model_image_size(net), []
        for batch in images.split(batch_size):
            x = batch.to(device)
            if x.shape[-1] != size or x.shape[-2] != size:
                x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = normalise(x, 255.0)
            p = tta_probs(net, x, tta)
            out.append(p.float().cpu())
        per_net.append(torch.cat(out).numpy())
    return per_net[0] if len(per_net) == 1 else fuse_scores(per_net, fusion)


def load_labelled(path: str, split: str | None = None, face_crop: bool = False, no_face: list | None = None,
                  ferplus: str | None = None):
    """``(uint8 images [N, 1, s, s], labels [N], {skipped class: count}, description)``.
    FER2013 CSV: the named split (default ``test``), scored against the FER+ majority vote when
    ``ferplus`` names the votes file (rows FER+ drops are counted as skipped); JAFFE / image
    folder: every image (of a folder holding ``train/`` and ``test/``: those of the split, default
    test), with ``face_crop`` cut to its largest face (paths where none is found: appended to
    ``no_face``)."""
    from fer_lightning.pipeline.spec import data_spec_for

    if not Path(path).is_dir() and not str(path).endswith((".csv", ".csv.gz")):  # 'synthetic', a photo
        raise UserError(f"--data {path}: evaluate needs labelled faces: a FER2013 .csv/.csv.gz file, or a JAFFE "
                        f"or image folder (to label photos, use fer-lightning predict)")
    spec = data_spec_for(path)
    kind = spec["class_path"].rsplit(".", 1)[1]
    skipped = {}
    if ferplus and kind != "FER2013DataModule":
        raise UserError(f"--ferplus: FER+ votes label FER2013's rows; {path} is not a FER2013 CSV")
    if kind == "FER2013DataModule":
        from fer_lightning.data import FER2013DataModule

        if face_crop:
            raise UserError(f"--face-crop: {path} holds FER2013's faces, already cropped (leave it out)")
        x, y = FER2013DataModule(path).split(split or "test")
        if not ferplus:
            return x, y, skipped, f"{path} [{split or 'test'}]"
        n_all = len(y)
        x, y = FER2013DataModule(path, ferplus_csv=ferplus).split(split or "test")
        skipped["contempt, unknown or not a face (FER+)"] = n_all - len(y)
        return x, y, skipped, f"{path} [{split or 'test'}], FER+ majority labels ({ferplus})"
    roots = spec["init_args"]
    if kind == "ImageFolderDataModule" and "test_root" in roots:  # train/ and test/ (Kaggle's layout)
        if split not in (None, "test", "train"):
            raise UserError(f"--split {split}: {path} holds the splits train and test")
        path = roots["train_root" if split == "train" else "test_root"]
    elif split not in (None, "all"):
        raise UserError(f"--split {split}: a folder is evaluated whole (leave --split out)")
    if kind == "JAFFEDataModule":
        from fer_lightning.data.jaffe import read_jaffe

        x, y, _ = read_jaffe(path, 128, face_crop, no_face)
        return x, y, skipped, f"{path} (JAFFE, all {len(y)} images)"
    if kind == "ImageFolderDataModule":
        from fer_lightning.data.folder import read_image_folder

        x, y = read_image_folder(path, 128, skipped, face_crop, no_face)
        return x, y, skipped, f"{path} (all {len(y)} images)"
    raise UserError(f"--data {path}: evaluate needs labelled faces (a FER2013 CSV, a JAFFE or image folder)")


def evaluate(models: list[str], data: str, out_dir, split: str | None = None, fusion: str = "mean",
             tta: str = "none", device: str = "cpu", face_crop: bool = False, ferplus: str | None = None) -> dict:
    from fer_lightning.checkpoints import load_net
    from fer_lightning.metrics import score
    from fer_lightning.plots import plot_confusion

    if not models:
        raise UserError("evaluate: give at least one --model checkpoint")
    out = output_dir(out_dir)
    nets = [load_net(m) for m in models]
    no_face = []
    x, y, skipped, described = load_labelled(data, split, face_crop, no_face, ferplus)
    probs = predict_probs(nets, x, fusion, tta, device=device)
    metrics = score(probs, y.numpy(), len(CLASS_NAMES))
    metrics.update(models=[str(m) for m in models], data=described, fusion=fusion if len(nets) > 1 else None,
                   tta=tta, excluded_classes=skipped, face_crop=face_crop,
                   no_face_found=len(no_face) if face_crop else None)
    atomic_write_json(out / "metrics.json", metrics)
    first = Path(models[0]) if Path(models[0]).is_dir() else Path(models[0]).parent  # the stage's folder
    plot_confusion(metrics["confusion"], f"{first.name}{' +…' if len(models) > 1 else ''} "
                   f"on {Path(data).name}", out / "confusion.png")
    atomic_write_text(out / "report.md", to_markdown(metrics))
    return metrics


def to_markdown(m: dict) -> str:
    lines = [f"# Evaluation on {m['data']}", "",
             "Models: " + ", ".join(f"`{p}`" for p in m["models"])
             + (f" (score fusion: {m['fusion']})" if m["fusion"] else "")
             + (f"; test-time augmentation: {m['tta']}" if m["tta"] != "none" else "")
             + ("" if not m.get("face_crop") else "; faces cut out with the Haar cascade"
                + (f" (none found in {m['no_face_found']} images: used whole)" if m["no_face_found"] else "")), "",
             f"Accuracy {100 * m['acc']:.2f} % · macro precision {100 * m['precision']:.2f} % · "
             f"recall {100 * m['recall']:.2f} % · F1 {100 * m['f1']:.2f} % on {m['n']} faces", ""]
    if m["excluded_classes"]:
        lines += ["Excluded (classes the models cannot predict): " + ", ".join(
            f"{k}: {v} images" for k, v in m["excluded_classes"].items()), ""]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    support = np.asarray(m["confusion"]).sum(1)
    for i, c in enumerate(CLASS_NAMES):
        pc = m["per_class"]
        lines.append(f"| {c} | {100 * pc['precision'][i]:.2f} | {100 * pc['recall'][i]:.2f} | "
                     f"{100 * pc['f1'][i]:.2f} | {support[i]} |")
    return "\n".join(lines + ["", "![confusion matrix](confusion.png)", ""])


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="fer-lightning evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="a model.ckpt, or a finished stage's folder (repeat for an ensemble)")
    ap.add_argument("--data", required=True, help="FER2013 .csv/.csv.gz, a JAFFE folder or an image folder")
    ap.add_argument("--split", help="FER2013 split: test, public_test, private_test, train, val (default test)")
    ap.add_argument("--fusion", default="mean", choices=["mean", "max"], help="score fusion of several models")
    ap.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation")
    ap.add_argument("--face-crop", action="store_true",
                    help="cut each image of a folder to its largest face first (OpenCV Haar cascade, as predict): "
                         "for photos of whole heads, such as JAFFE")
    ap.add_argument("--ferplus", metavar="FER2013NEW_CSV",
                    help="score a FER2013 split against the FER+ majority vote of this votes file instead of "
                         "the original labels (rows FER+ drops are counted and left out)")
    ap.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/evaluate", help="output directory")
    a = ap.parse_args(argv)
    m = evaluate(a.model, a.data, a.out, a.split, a.fusion, a.tta, a.device, a.face_crop, a.ferplus)
    print(to_markdown(m))
    print(f"written: {Path(a.out) / 'metrics.json'}, report.md, confusion.png")
    return 0
