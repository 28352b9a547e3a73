"""Rebuild a trained net from a checkpoint file alone, with a clear error for a bad file."""

from pathlib import Path

import torch

from fer_lightning.config import import_object
from fer_lightning.errors import UserError


def net_spec(net: torch.nn.Module) -> dict:
    """What rebuilds ``net`` (untrained): its class path and ``init_args``."""
    return {"class_path": f"{type(net).__module__}.{type(net).__qualname__}",
            "init_args": getattr(net, "init_args", {})}


def build_net(spec: dict) -> torch.nn.Module:
    return import_object(spec["class_path"])(**spec["init_args"])


def load_net(path) -> torch.nn.Module:
    """The model of face images a :class:`ClassifierModule` checkpoint holds, weights loaded, in
    eval mode: its ``net``, or for a ``head`` stage given its backbones, the exported FusionNet."""
    path = Path(path)
    if path.is_dir() and (path / "model.ckpt").is_file():  # a finished stage's folder
        path = path / "model.ckpt"
    if not path.is_file():
        hint = " (a folder: name its model.ckpt)" if path.is_dir() else ""
        raise UserError(f"{path}: checkpoint not found{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                        f"{e.__class__.__name__}")
    spec = ckpt.get("hyper_parameters", {}).get("net") if isinstance(ckpt, dict) else None
    if not spec:
        raise UserError(f"{path}: not a fer_lightning classifier checkpoint (no hyper_parameters.net)")
    if "image_net" in ckpt:  # a head on saved features, exported with its backbones (stages/head.py)
        spec, state = ckpt["image_net"]["net"], ckpt["image_net"]["state_dict"]
    elif spec["class_path"].endswith(".FeatureHead"):
        raise UserError(f"{path}: a head trained on saved feature vectors, not a model of face images; to "
                        f"use it on images, give its head stage the backbones' checkpoints (inputs: backbones: "
                        f"[<stage>.checkpoint, ...], one per features input, as configs/pipelines/fer2013_fusion.yaml)")
    else:
        state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net = build_net(spec)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not match {spec['class_path']}: {first}")
    return net.eval()


def init_from_checkpoint(net: torch.nn.Module, path, key: str = "model.init_weights") -> str:
    """Start ``net`` from the weights of a trained net of the same class (fine-tuning: train on
    FER2013, go on training on JAFFE or a folder of your own). Every tensor must match in name and
    shape, except the ``classifier``'s, which stay freshly initialised where the number of classes
    differs. Returns a one-line account of what was loaded."""
    try:
        source = load_net(path)
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
    if type(source) is not type(net):
        raise UserError(f"{key}: {path} holds a {type(source).__name__}, this model is a {type(net).__name__}: "
                        f"fine-tuning starts from a net of the same class")
    own, theirs = net.state_dict(), source.state_dict()
    fresh = [n for n in {**own, **theirs} if n not in own or n not in theirs or own[n].shape != theirs[n].shape]
    wrong = [n for n in fresh if not n.startswith("classifier.")]
    if wrong:
        def shape(state):
            return f"shape {tuple(state[wrong[0]].shape)}" if wrong[0] in state else "no such tensor"

        raise UserError(f"{key}: {path} does not fit this {type(net).__name__}: {wrong[0]} has {shape(own)} here, "
                        f"{shape(theirs)} there (its init_args differ: {getattr(source, 'init_args', '?')})")
    net.load_state_dict({k: v for k, v in theirs.items() if k not in fresh}, strict=False)
    return (f"{key}: {len(own) - len(fresh)} of {len(own)} tensors from {path}"
            + (f"; a new classifier ({', '.join(fresh)})" if fresh else ""))
