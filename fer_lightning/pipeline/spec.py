"""The pipeline file: a DAG of stages, each a kind + its config + inputs from other stages.

    name: fer2013_fusion
    base: other.yaml          # optional: this file is deep-merged on top of it
    data: {class_path: ..., init_args: {...}}   # shared by every training stage
    trainer: {max_epochs: 40, ...}              # shared by every training stage
    seed: 0
    jobs: auto                # independent stages at once: auto (from the devices) or a number
    stages:
      cnn1:
        kind: train
        config: ../models/cnn1.yaml   # file(s), relative to this YAML, merged in order
        params: {...}                 # inline config on top of them
      fusion:
        kind: fuse
        config: ../models/fusion.yaml
        inputs: {backbones: [cnn1.checkpoint, cnn2.checkpoint]}
      mobilenet:
        kind: train
        foreach: {data.init_args.fold: [0, 1, 2]}   # one stage per value: mobilenet@0, ...

An input is ``<stage>.<output>``; inputs may be a single reference, a list or a mapping of them.
An input with a ``/`` in it is a file instead — an artifact of another run, e.g.
``../runs/fer2013_vgg1x1/vgg1x1/probs.npz`` (relative to the pipeline file; in ``--set``, to the
working directory) — and its content is part of the stage's key like any input's.
Each stage kind says which of the shared ``seed``/``trainer``/``data`` it receives (``SHARED``).

``foreach`` (cross-validation folds, seeds, ...) runs a stage once per value. A dotted key
(``data.init_args.fold``) is set to the value in each copy's config; ``seed`` sets what the top-level
``seed`` sets (a training stage's ``seed_everything``), for stages that take it; any other plain
name (``fold``) only labels the copies, for stages that just consume other copies' outputs.
Several keys run every combination: ``{seed: [0, 1], data.init_args.fold: [0, 1, 2]}`` makes six
copies, ``stage@<seed>@<fold>``. A key's last name is its *dimension* (``data.init_args.fold`` and
``fold`` are one). A reference binds to the copies of the stage it names that agree with the
referring copy on every dimension both loop over, and takes every copy along the dimensions the
referring stage does not loop over: the list of them (a report then shows mean ± std).
"""

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from fer_lightning.config import deep_merge, load_yaml, parse_yaml, set_dotted
from fer_lightning.errors import UserError

TOP_KEYS = {"name", "base", "data", "trainer", "seed", "stages", "description", "jobs"}
STAGE_KEYS = {"kind", "config", "params", "inputs", "foreach"}


@dataclass
class Stage:
    name: str
    kind: str
    config: dict                    # fully resolved: what the stage receives
    inputs: object = None           # as declared: refs in a str / list / dict structure
    deps: list = field(default_factory=list)
    loop_values: dict = field(default_factory=dict)  # a foreach copy's value per key (else empty)

    @property
    def loops(self) -> dict:
        """A foreach copy's value per dimension (``{"fold": 7}`` for ``data.init_args.fold: 7``)."""
        return _by_dimension(self.loop_values)


@dataclass
class Pipeline:
    name: str
    path: Path
    stages: dict                    # name -> Stage, in topological order
    jobs: object = None             # stages at once: "auto" or a number (None: the runner's default)


def _load_with_base(path: Path, seen=()) -> dict:
    doc = load_yaml(path)
    base = doc.pop("base", None)
    if base is None:
        return _absolutise(doc, path.parent)
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise UserError(f"{path}: 'base' chain loops back to {base_path}")
    return deep_merge(_load_with_base(base_path, seen + (base_path,)), _absolutise(doc, path.parent))


def _absolutise(doc: dict, here: Path) -> dict:
    """Stage config files and file inputs are relative to the YAML that names them."""
    for name, st in (doc.get("stages") or {}).items():
        if isinstance(st, dict) and "config" in st:
            files = st["config"] if isinstance(st["config"], list) else [st["config"]]
            if not all(isinstance(f, str) for f in files):
                raise UserError(f"stages.{name}.config: expected a file path or a list of them")
            st["config"] = [str((here / f).resolve()) for f in files]
        if isinstance(st, dict) and "inputs" in st:
            st["inputs"] = _resolve_files(st["inputs"], here)
    return doc


def is_file_ref(ref: str) -> bool:
    """``<stage>.<output>`` names another stage's artifact; anything with a ``/`` is a file."""
    return "/" in ref


def _resolve_files(inputs, here: Path):
    return map_refs(inputs, lambda ref: str((here / ref).resolve()) if is_file_ref(ref) else ref)


def map_refs(inputs, fn):
    """The inputs structure (a reference, a list or a mapping of them) with ``fn`` applied to each
    reference."""
    if isinstance(inputs, str):
        return fn(inputs)
    if isinstance(inputs, list):
        return [map_refs(x, fn) for x in inputs]
    if isinstance(inputs, dict):
        return {k: map_refs(v, fn) for k, v in inputs.items()}
    return inputs


def iter_refs(inputs):
    if inputs is None:
        return
    if isinstance(inputs, str):
        yield inputs
    elif isinstance(inputs, list):
        for x in inputs:
            yield from iter_refs(x)
    elif isinstance(inputs, dict):
        for x in inputs.values():
            yield from iter_refs(x)
    else:
        raise UserError(f"input reference {inputs!r} must be '<stage>.<output>'")


def data_spec_for(path: str) -> dict:
    """``--data PATH``: a FER2013 CSV, a JAFFE folder, an image folder (of class folders, or of
    ``train/`` and ``test/`` folders of class folders, as Kaggle's FER2013 images), or ``synthetic``."""
    if path == "synthetic":
        return {"class_path": "fer_lightning.data.SyntheticFacesDataModule", "init_args": {}}
    p = Path(path)
    if p.is_dir() and any(p.glob("*.*.*.tif*")):
        return {"class_path": "fer_lightning.data.JAFFEDataModule", "init_args": {"root": str(p.resolve())}}
    if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir():  # Kaggle's image layout
        return {"class_path": "fer_lightning.data.ImageFolderDataModule",
                "init_args": {"train_root": str((p / "train").resolve()), "test_root": str((p / "test").resolve())}}
    if p.is_dir():
        return {"class_path": "fer_lightning.data.ImageFolderDataModule",
                "init_args": {"train_root": str(p.resolve())}}
    if p.name.endswith((".csv", ".csv.gz")):
        if not p.is_file():
            raise UserError(f"{p}: data file not found")
        return {"class_path": "fer_lightning.data.FER2013DataModule",
                "init_args": {"csv_path": str(p.resolve())}}
    raise UserError(f"--data {path}: expected a FER2013 .csv/.csv.gz file, a JAFFE or image folder, "
                    f"or 'synthetic'")


# what a stage name or a foreach value may be: '@' marks foreach copies, '.' separates a stage from
# its output, '/' makes a file input, and each names a folder of the run
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _drop_dataset_params(doc: dict, kinds: dict):
    """Params that describe the pipeline file's dataset (a kind's ``DATASET_PARAMS``, e.g. the
    report's ``split_labels: {test: "test (Public+Private)"}``) say nothing true of another kind
    of dataset that ``--data`` swaps in: they are dropped (``--set`` may give them again)."""
    stages = doc.get("stages")
    for st in stages.values() if isinstance(stages, dict) else ():
        kind = kinds.get(st.get("kind")) if isinstance(st, dict) else None
        params = st.get("params") if kind is not None else None
        if isinstance(params, dict):
            for key in getattr(kind, "DATASET_PARAMS", ()):
                params.pop(key, None)


def load_pipeline(path, sets: list[str] = (), data: str | None = None) -> Pipeline:
    from stages import KINDS

    path = Path(path)
    doc = _load_with_base(path.resolve())
    if data is not None:
        # --data replaces the data module (and its init_args) but keeps shared settings such as
        # batch_size and augment from the pipeline file.
        new = data_spec_for(data)
        old = doc.get("data") or {}
        same = old.get("class_path") == new["class_path"]  # then only the path changes
        keep = {k: v for k, v in (old.get("init_args") or {}).items()
                if same or k in ("batch_size", "eval_batch_size", "augment", "seed")}
        new["init_args"] = {**keep, **new["init_args"]}
        doc["data"] = new
        if not same:
            _drop_dataset_params(doc, KINDS)
    # --set last: it can change anything, the data module --data chose included
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or "" in key.strip().split("."):
            raise UserError(f"--set {item}: expected KEY=VALUE, KEY dotted (stages.cnn1.params.seed=1)")
        set_dotted(doc, key.strip(), parse_yaml(value, f"--set {item}"))
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} "
                        f"(allowed: {', '.join(sorted(TOP_KEYS))})")
    raw = doc.get("stages")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: 'stages' must be a non-empty mapping of stage name -> stage")
    loops = {}
    for name, st in raw.items():
        if not isinstance(st, dict):
            raise UserError(f"{path}: stages.{name} must be a mapping")
        bad = set(st) - STAGE_KEYS
        if bad:
            raise UserError(f"{path}: stages.{name}: unknown key(s) {', '.join(sorted(bad))} "
                            f"(allowed: {', '.join(sorted(STAGE_KEYS))})")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserError(f"{path}: stages.{name}: a stage name is letters, digits, '_' and '-' only")
        loops[name] = _foreach(st.get("foreach"), f"{path}: stages.{name}.foreach")
    stages = {}
    for name, st in raw.items():
        kind = st.get("kind")
        if kind not in KINDS:
            what = "missing" if kind is None else f"unknown stage kind '{kind}'"
            raise UserError(f"{path}: stages.{name}.kind: {what} (known: {', '.join(sorted(KINDS))})")
        shared = getattr(KINDS[kind], "SHARED", ())
        seed_key = ("seed_everything" if "trainer" in shared else "seed") if "seed" in shared else None
        cfg = {}
        if seed_key:
            cfg[seed_key] = _checked_seed(doc.get("seed", 0), f"{path}: seed")
        if "trainer" in shared:
            cfg["trainer"] = dict(doc.get("trainer") or {})
        if "data" in shared and doc.get("data"):
            cfg["data"] = doc["data"]
        files = st.get("config") or []
        files = files if isinstance(files, list) else [files]  # --set gives a path as it is
        if not all(isinstance(f, str) for f in files):
            raise UserError(f"{path}: stages.{name}.config: expected a file path or a list of them")
        for f in files:  # those the YAML named are absolute by now; those --set gave are relative to here
            if not (Path.cwd() / f).is_file():
                raise UserError(f"{path}: stages.{name}.config: file '{f}' does not exist")
            cfg = deep_merge(cfg, load_yaml(Path.cwd() / f))
        params = st.get("params") or {}
        if not isinstance(params, dict):
            raise UserError(f"{path}: stages.{name}.params must be a mapping")
        cfg = deep_merge(cfg, params)
        allowed = getattr(KINDS[kind], "PARAMS", None)
        given = set(cfg) - {seed_key} - {k for k in ("trainer", "data") if k in shared}  # minus the shared ones
        unknown = sorted(given - set(allowed)) if allowed is not None else []
        if unknown:
            raise UserError(f"{path}: stages.{name}.params: unknown key(s) {', '.join(unknown)} "
                            f"(a {kind} stage takes {', '.join(allowed)})")
        st["inputs"] = _resolve_files(st.get("inputs"), Path.cwd())  # those --set added
        for ref in iter_refs(st.get("inputs")):
            if is_file_ref(ref):
                if not Path(ref).is_file():
                    raise UserError(f"{path}: stages.{name}.inputs: file '{ref}' does not exist")
                continue
            up, _, out = ref.partition(".")
            if up not in raw:
                raise UserError(f"{path}: stages.{name}.inputs: '{ref}' names a missing stage '{up}'")
            up_kind = raw[up].get("kind") if isinstance(raw[up], dict) else None
            if up_kind in KINDS and out not in KINDS[up_kind].OUTPUTS:
                raise UserError(f"{path}: stages.{name}.inputs: stage '{up}' ({up_kind}) has no output "
                                f"'{out}' (it has {', '.join(KINDS[up_kind].OUTPUTS)})")
            if loops[up] and loops[name]:
                _check_loops_meet(loops[up], loops[name], f"{path}: stages.{name}.inputs: '{ref}'", up, name)
        # the config key each dimension's value goes to (None: the value only labels the copies)
        loop = loops[name] or []
        targets = {}
        for key, values in loop:
            targets[key] = key if "." in key else seed_key if key == "seed" else None
            if key == "seed" and targets[key]:
                for v in values:
                    _checked_seed(v, f"{path}: stages.{name}.foreach.seed")
        for combo in itertools.product(*[values for _, values in loop]):
            copy_cfg = cfg
            if any(targets.values()):
                copy_cfg = copy.deepcopy(cfg)
                for key, value in zip(targets, combo):
                    if targets[key] is not None:
                        set_dotted(copy_cfg, targets[key], value)
            loop_values = dict(zip(targets, combo))
            inputs = _bind(st.get("inputs"), loops, _by_dimension(loop_values))
            deps = []
            for ref in iter_refs(inputs):
                if not is_file_ref(ref) and (up := ref.partition(".")[0]) not in deps:
                    deps.append(up)
            copy_name = _copy_name(name, combo)
            stages[copy_name] = Stage(copy_name, kind, copy_cfg, inputs, deps, loop_values)
    if data is not None and not any("data" in s.config for s in stages.values()):
        raise UserError(f"--data {data}: no stage of {path.name} reads the pipeline's data (its inputs are other "
                        f"runs' files); leave --data out")
    name = doc.get("name") or path.stem
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        # it names the default output folder, runs/<name>
        raise UserError(f"{path}: name: {name!r}: a folder name for runs/<name> (no '/', not starting with '.')")
    return Pipeline(name, path, _toposort(stages, path), doc.get("jobs"))


def _checked_seed(value, where: str) -> int:
    """A seed numpy accepts (``seed_everything`` seeds numpy too): caught here, not in every stage."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 32:
        raise UserError(f"{where}: {value!r} is not a seed (an integer from 0 to {2 ** 32 - 1})")
    return value


def _foreach(spec, where: str):
    """``{dotted.key: [values], ...}`` → [(key, values), ...] (every combination runs), or None."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise UserError(f"{where}: expected a mapping of key -> values, e.g. {{data.init_args.fold: [0, 1, 2]}}")
    loops, seen = [], {}
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key}: expected a non-empty list of values")
        for v in values:  # each value names a copy, <stage>@<value>: a folder and a reference
            if isinstance(v, bool) or not isinstance(v, (int, str)) or not _NAME.fullmatch(str(v)):
                raise UserError(f"{where}.{key}: value {v!r} must be an integer or a name of letters, digits, "
                                f"'_' and '-'")
        if len({str(v) for v in values}) != len(values):
            raise UserError(f"{where}.{key}: a value is repeated in {values} (each value names one copy)")
        if _dimension(key) in seen:
            raise UserError(f"{where}: '{seen[_dimension(key)]}' and '{key}' are both dimension "
                            f"'{_dimension(key)}' (a key's last name); loop over it once")
        seen[_dimension(key)] = key
        loops.append((key, values))
    return loops


def _copy_name(stage: str, values) -> str:
    """A foreach copy's name, ``stage@<value>@<value>``: the stage's own name when it has no foreach."""
    return "@".join([stage, *map(str, values)])


def copied_stage(name: str) -> str:
    """The stage a foreach copy copies (``finetune@3@7`` → ``finetune``)."""
    return name.partition("@")[0]


def _dimension(key: str) -> str:
    """What a foreach key loops over: its last name (``data.init_args.fold`` and ``fold`` are one)."""
    return str(key).rsplit(".", 1)[-1]


def _by_dimension(loop_values: dict) -> dict:
    """A copy's value per key → its value per dimension."""
    return {_dimension(k): v for k, v in loop_values.items()}


def _check_loops_meet(up_loops, loops, where: str, up: str, name: str):
    """A stage that loops and reads a stage that loops must share a dimension with it, over the same
    values: else no copy of one belongs to a copy of the other."""
    up_dims = {_dimension(k): v for k, v in up_loops}
    dims = {_dimension(k): v for k, v in loops}
    shared = [d for d in dims if d in up_dims]
    if not shared:
        raise UserError(f"{where}: '{up}' loops over {', '.join(up_dims)} and '{name}' over {', '.join(dims)}, "
                        f"with no dimension in common; name '{name}'s foreach key like '{up}'s "
                        f"(a key's last name is its dimension: 'fold' is 'data.init_args.fold')")
    for d in shared:
        if set(map(str, dims[d])) != set(map(str, up_dims[d])):
            raise UserError(f"{where}: both stages loop over '{d}', but over different values "
                            f"({up_dims[d]} and {dims[d]})")


def _bind(inputs, loops: dict, at: dict):
    """Point references at foreach copies: those of the referring copy's values (``at``, dimension ->
    value) on the dimensions both stages loop over, every copy along the others. A reference to
    more than one copy becomes a list, which, inside a list of references (score fusion's members,
    fuse's backbones), takes the reference's place: [a.probs, b.probs] -> [a@0.probs, a@1.probs, b.probs]."""
    def bind_ref(ref):
        up, _, out = ref.partition(".")
        if is_file_ref(ref) or not loops.get(up):
            return ref
        dims = [_dimension(k) for k, _ in loops[up]]
        copies = [f"{_copy_name(up, combo)}.{out}"
                  for combo in itertools.product(*[values for _, values in loops[up]])
                  if all(str(at[d]) == str(v) for d, v in zip(dims, combo) if d in at)]
        return copies[0] if all(d in at for d in dims) else copies

    def bind(x):
        if isinstance(x, str):
            return bind_ref(x)
        if isinstance(x, list):
            bound = [bind(item) for item in x]
            return [y for item, b in zip(x, bound)
                    for y in (b if isinstance(item, str) and isinstance(b, list) else [b])]
        if isinstance(x, dict):
            return {k: bind(v) for k, v in x.items()}
        return x

    return bind(inputs)


def _toposort(stages: dict, path) -> dict:
    order, state = [], {}

    def visit(n, trail):
        if state.get(n) == "done":
            return
        if state.get(n) == "visiting":
            cycle = trail[trail.index(n):] + [n]
            raise UserError(f"{path}: the stages form a cycle: {' -> '.join(cycle)}")
        state[n] = "visiting"
        for d in stages[n].deps:
            visit(d, trail + [n])
        state[n] = "done"
        order.append(n)

    for n in stages:
        visit(n, [])
    return {n: stages[n] for n in order}
