"""probe: scikit-learn classifiers on saved last-fc features (paper 000, Table 4: SVM and KNN
with k = 5). Features are standardised (fitted on the training split) before each classifier,
and projected on their first ``pca`` principal components when a classifier asks for it.

Inputs: ``features``: a mapping ``{model name: <stage>.features}``.
Params: ``classifiers``: ``{name: {class_path, init_args, [pca]}}`` (default: LinearSVC C=0.1 and
5-NN, the fastest at equal accuracy in bench/probes.py on FER2013 CNN features: an RBF SVC, with
or without PCA, and a Nystroem kernel map were no more accurate on average and 5-20x slower);
``train_split`` (default
``train``); ``eval_splits`` (default: every other split present). The (features, classifier)
fits run in parallel, as many at once as the stage has CPU threads, in threads rather than
worker processes: liblinear's fit and the KNN distance kernels release the GIL, and a worker
process spends ~8 s importing torch and scikit-learn before its first fit (bench/probes.py
prints the three ways side by side).
"""

from fer_lightning.artifacts import atomic_write_json, load_npz
from fer_lightning.config import instantiate
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage

OUTPUTS = {"metrics": "metrics.json"}
PARAMS = ("classifiers", "train_split", "eval_splits")  # what params may hold
DEFAULT_CLASSIFIERS = {
    "svm": {"class_path": "sklearn.svm.LinearSVC", "init_args": {"C": 0.1}},
    "knn": {"class_path": "sklearn.neighbors.KNeighborsClassifier", "init_args": {"n_neighbors": 5}},
}


def _fit_and_score(spec: dict, where: str, path: str, train_split: str, eval_splits) -> dict:
    """One classifier on one features file: ``{split: scores}``."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fer_lightning.metrics import score  # imports torch: only when the stage runs

    z = load_npz(path)
    if f"{train_split}_features" not in z:
        raise UserError(f"{path}: no '{train_split}' split to fit the probes on")
    spec = dict(spec)
    pca = spec.pop("pca", None)
    steps = [StandardScaler()] + ([PCA(int(pca), random_state=0)] if pca else []) + [instantiate(spec, where)]
    clf = make_pipeline(*steps)
    clf.fit(z[f"{train_split}_features"], z[f"{train_split}_labels"])
    present = [k[: -len("_features")] for k in z if k.endswith("_features")]
    splits = eval_splits or [s for s in present if s != train_split]
    return {s: score(clf.predict(z[f"{s}_features"]), z[f"{s}_labels"]) for s in splits if f"{s}_features" in z}


def check(name: str, config: dict, inputs) -> None:
    """The inputs and every classifier's class and arguments (built, not fitted), checked before the
    pipeline's first stage runs."""
    features = inputs.get("features") if isinstance(inputs, dict) else None
    if not isinstance(features, dict) or not features:
        raise UserError(f"stages.{name}.inputs.features: map model names to '<stage>.features'")
    classifiers = config.get("classifiers", DEFAULT_CLASSIFIERS)
    if not isinstance(classifiers, dict) or not classifiers:
        raise UserError(f"stages.{name}.params.classifiers: map names to {{class_path, init_args, [pca]}}")
    for c, spec in classifiers.items():
        instantiate({k: v for k, v in spec.items() if k != "pca"} if isinstance(spec, dict) else spec,
                    f"stages.{name}.params.classifiers.{c}")


def run(ctx):
    import torch
    from joblib import Parallel, delayed

    check(ctx.name, ctx.config, ctx.inputs)
    features = ctx.inputs["features"]
    classifiers = ctx.config.get("classifiers", DEFAULT_CLASSIFIERS)
    train_split = ctx.config.get("train_split", "train")
    jobs = [(m, c, spec, path) for m, path in features.items() for c, spec in classifiers.items()]
    results = Parallel(n_jobs=min(len(jobs), torch.get_num_threads()), prefer="threads")(
        delayed(_fit_and_score)(spec, f"stages.{ctx.name}.params.classifiers.{c}", path, train_split,
                                ctx.config.get("eval_splits"))
        for m, c, spec, path in jobs)
    metrics = {}
    for (m, c, _, _), r in zip(jobs, results):
        metrics.setdefault(m, {})[c] = r
    atomic_write_json(ctx.output("metrics"), metrics)
    summary = {f"{m}/{c}/{s}/acc": v["acc"] for m, cs in metrics.items() for c, ss in cs.items()
               for s, v in ss.items()}
    log_stage(ctx, summary, {n: ctx.output(n) for n in OUTPUTS})
    return summary
