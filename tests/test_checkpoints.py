"""peanut_jax.checkpoints: the one loading door for every checkpoint kind, its family check and
errors, the family table, and the layering (no pipeline/train imports, no training-only packages
needed for inference)."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax import checkpoints
from peanut_jax.checkpoints import families, registry
from peanut_jax.checkpoints.export import export_weights, load_exported, module_kwargs
from peanut_jax.checkpoints.load import load

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSETS = REPO / "peanut_jax" / "assets"


def _same_params(a, b):
    fa, fb = flatten_dict(dict(a["params"])), flatten_dict(dict(b["params"]))
    assert set(fa) == set(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg="/".join(k))


def _orbax_workdir(path: pathlib.Path, exported: pathlib.Path, record_model: bool = True) -> pathlib.Path:
    from peanut_jax.train.checkpoint import Checkpointer

    name, _, variables, _ = load_exported(exported)
    kwargs = json.loads((exported / "model.json").read_text())["kwargs"]
    with Checkpointer(path / "checkpoints", async_save=False) as ck:
        ck.save(1, {"params": variables["params"], "step": np.int32(1)}, force=True)
    if record_model:
        (path / "config.json").write_text(json.dumps({"task": name.split("_")[0], "model": {"name": name, **kwargs}}))
    return path


def _official_file(path: pathlib.Path, exported: pathlib.Path) -> pathlib.Path:
    from peanut_jax.convert import to_official
    from peanut_jax.convert.reader import save_safetensors

    name, _, variables, _ = load_exported(exported)
    save_safetensors(path, {k: np.ascontiguousarray(v) for k, v in to_official(name, variables).items()})
    return path


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """Every checkpoint kind holding the same SPyNet weights (the bundled spynet_demo)."""
    tmp = tmp_path_factory.mktemp("kinds")
    return {
        "registry name": "spynet_demo",
        "exported folder": ASSETS / "spynet_demo",
        "exported folder (str)": str(ASSETS / "spynet_demo"),
        "orbax workdir": _orbax_workdir(tmp / "run", ASSETS / "spynet_demo"),
        "official file": _official_file(tmp / "spynet.safetensors", ASSETS / "spynet_demo"),
    }


@pytest.mark.parametrize("family", [None, "spynet"])
def test_every_kind_loads_the_same_weights(kinds, family):
    ref = load_exported(ASSETS / "spynet_demo")[2]
    for kind, spec in kinds.items():
        module, variables = load(spec, family)
        assert type(module).__name__ == "SPyNet" and module.variant == "mmagic", kind
        _same_params(variables, ref)
        hash(module)  # jit-static
    assert checkpoints.load is load


def test_orbax_workdir_without_a_recorded_model(tmp_path):
    run = _orbax_workdir(tmp_path / "run", ASSETS / "spynet_demo", record_model=False)
    module, variables = load(run, "spynet")
    _same_params(variables, load_exported(ASSETS / "spynet_demo")[2])
    with pytest.raises(ValueError, match="give model_name"):
        load(run)


@pytest.mark.parametrize("spec", ["interpolate_demo", ASSETS / "interpolate_demo"])
def test_wrong_family_is_one_line_naming_both_models(spec):
    with pytest.raises(ValueError) as err:
        load(spec, "e2fgvi")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("holds weights of model 'rife', not 'e2fgvi'"), msg


def test_wrong_family_of_an_official_file(kinds):
    with pytest.raises(ValueError, match=r"holds weights of model 'spynet', not 'rife'$"):
        load(kinds["official file"], "rife")


def test_flag_prefixes_every_error():
    with pytest.raises(ValueError) as err:
        load("interpolate_demo", "e2fgvi", flag="--checkpoint-erase")
    assert str(err.value) == (
        "--checkpoint-erase interpolate_demo: weights 'interpolate_demo': holds weights of model 'rife', not 'e2fgvi'"
    )
    with pytest.raises(ValueError) as err:
        load(ASSETS / "upscale_demo", "e2fgvi", flag="--checkpoint-erase")
    assert str(err.value) == (
        f"--checkpoint-erase {ASSETS / 'upscale_demo'}: holds weights of model 'basicvsr_pp', not 'e2fgvi'"
    )
    with pytest.raises(
        ValueError,
        match="^--checkpoint-upscale no_such_weights: checkpoint 'no_such_weights' is "
        "neither a file/directory nor a registry name",
    ):
        load("no_such_weights", "basicvsr_pp", flag="--checkpoint-upscale")
    with pytest.raises(FileNotFoundError, match="not found"):
        load("missing/dir", "spynet")


def test_offline_registry_name_suggests_the_bundled_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path))
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    with pytest.raises(registry.OfflineError) as err:
        load("rife_hdv3", flag="--checkpoint-interpolate")
    msg = str(err.value)
    assert msg.startswith("--checkpoint-interpolate rife_hdv3: PEANUT_OFFLINE is set")
    assert msg.endswith("; or run offline with the bundled demo weights: --checkpoint-interpolate interpolate_demo")
    assert not any(tmp_path.iterdir())


def test_dtype_precision_and_overrides_reach_the_module():
    module, _ = load("interpolate_demo", dtype="bfloat16")
    assert module.dtype == jnp.bfloat16
    module, _ = load("interpolate_demo", dtype="float32", precision="default")
    assert module.dtype == jnp.float32
    module, _ = load("erase_demo", "e2fgvi", precision="highest")
    assert module.precision == "highest" and module.hq


def test_export_round_trip_records_only_non_default_fields(tmp_path):
    _, module, variables, _ = load_exported(ASSETS / "interpolate_demo")
    kwargs = module_kwargs("rife", module)
    d = export_weights(tmp_path / "e", "rife", kwargs, variables["params"], metadata={"k": 1})
    got_name, got_module, got_vars, meta = load_exported(d)
    assert got_name == "rife" and got_module == module and meta == {"k": 1}
    _same_params(got_vars, variables)


def test_export_trained_checks_the_module_and_records_the_run(tmp_path):
    from peanut_jax.checkpoints.export import export_trained
    from peanut_jax.models import build

    run = _orbax_workdir(tmp_path / "run", ASSETS / "interpolate_demo")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 1, "eval/psnr": 30.0}\n')
    kwargs = json.loads((ASSETS / "interpolate_demo" / "model.json").read_text())["kwargs"]
    seen = []

    def make_model(config):
        seen.append(config)
        return build("rife", **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})

    out = export_trained(run, tmp_path / "out", make_model, dtype="float16")
    assert seen[0].task == "rife" and isinstance(seen[0].model.widths, tuple)  # JSON lists back to tuples
    name, _, variables, meta = load_exported(out)
    assert name == "rife" and meta["step"] == 1 and meta["stored_dtype"] == "float16"
    assert meta["last_eval"] == {"step": 1, "eval/psnr": 30.0} and meta["task"] == "rife"
    ref = load_exported(ASSETS / "interpolate_demo")[2]
    for k, v in flatten_dict(dict(variables["params"])).items():
        want = flatten_dict(dict(ref["params"]))[k]
        np.testing.assert_array_equal(v, np.asarray(want, np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="checkpoint variables do not fit rife"):
        export_trained(run, tmp_path / "bad", lambda config: build("rife", context_c=8))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_trained(tmp_path, tmp_path / "bad", make_model)


def test_export_trained_samwise_keeps_the_batch_statistics(tmp_path):
    """A SAMWISE run exports its parameters (float16) and the adapters' BatchNorm statistics (the
    state's ``extra``, float32); a run without the statistics is refused, naming one."""
    from peanut_jax.checkpoints.export import export_trained
    from peanut_jax.models import build
    from peanut_jax.train.checkpoint import Checkpointer

    src = ASSETS / "mask_demo"
    if not (src / "model.json").is_file():
        pytest.skip("mask_demo not shipped (scripts/train_demo_weights.sh)")
    _, module, variables, _ = load_exported(src)
    kwargs = json.loads((src / "model.json").read_text())["kwargs"]
    stats = {k: np.asarray(v) + 0.25 for k, v in flatten_dict(dict(variables["batch_stats"])).items()}
    for run, extra in (("run", {"batch_stats": unflatten_dict(stats)}), ("nostats", {})):
        with Checkpointer(tmp_path / run / "checkpoints", async_save=False) as ck:
            ck.save(3, {"params": variables["params"], "step": np.int32(3), "extra": extra}, force=True)
        (tmp_path / run / "config.json").write_text(json.dumps({"task": "samwise", "model": {"name": "samwise"}}))
    out = export_trained(tmp_path / "run", tmp_path / "out", lambda config: build("samwise", **kwargs))
    name, got_module, got, meta = load_exported(out)
    assert name == "samwise" and got_module == module and meta["step"] == 3
    for k, v in flatten_dict(dict(got["batch_stats"])).items():
        np.testing.assert_array_equal(v, stats[k].astype(np.float32))
    _same_params(got, variables)
    with pytest.raises(ValueError, match="checkpoint variables do not fit samwise.*batch_stats"):
        export_trained(tmp_path / "nostats", tmp_path / "bad", lambda config: build("samwise", **kwargs))


# ------------------------------------------------------------------------------ the family table
def test_family_table_is_the_one_place_per_family():
    from peanut_jax.convert import converter_names
    from peanut_jax.models import names as model_names

    seen = {}
    for fam in families.FAMILIES.values():
        assert fam.model in fam.models
        for m in fam.models:
            assert families.family(m) == fam.name and m not in seen, m
            seen[m] = fam.name
        for e in fam.weights:
            assert e.model in fam.models, e.name
        if fam.default is not None:
            assert registry.get(fam.default).model in fam.models
        if fam.demo is not None:
            assert registry.get(fam.demo).bundled and registry.get(fam.demo).model in fam.models
    assert sorted(seen) == model_names() == converter_names()  # every model has its family and converter
    builtin = [e.name for e in families.builtin_weights()]
    assert len(set(builtin)) == len(builtin) and set(builtin) <= set(registry.names())
    assert families.STAGE_FAMILY == {"erase": "e2fgvi", "upscale": "basicvsr_pp", "interpolate": "rife"}
    assert families.STAGE_DEFAULT == {"erase": "e2fgvi_hq", "upscale": "basicvsr_pp", "interpolate": "rife_hdv3"}
    assert families.DEMO_WEIGHTS == {
        "e2fgvi": "erase_demo",
        "basicvsr": "upscale_demo",
        "rife": "interpolate_demo",
        "spynet": "spynet_demo",
        "samwise": "mask_demo",
    }


# ------------------------------------------------------------------------------ layering and dependencies
def test_checkpoints_never_imports_pipeline_or_train():
    for f in sorted((REPO / "peanut_jax" / "checkpoints").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for n in names:
                assert not n.startswith(("peanut_jax.pipeline", "peanut_jax.train")), f"{f.name}: imports {n}"
                if n.startswith("peanut_jax.") and not n.startswith("peanut_jax.checkpoints"):
                    assert n.split(".")[1] in ("convert", "models"), f"{f.name}: imports {n}"


_BLOCK_TRAINING = """
import sys
for name in ("tensorflow_datasets", "tensorflow", "grain", "array_record"):
    sys.modules[name] = None   # `import name` now raises ImportError
"""


def _run_without_training_packages(tmp_path, code: str, *args) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(_BLOCK_TRAINING)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEANUT_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
            "JAX_PLATFORMS": "cpu",
            "PEANUT_HOME": str(tmp_path / "home"),
            "PEANUT_XLA_CACHE": "0",
        }
    )
    cmd = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)


def test_inference_needs_no_training_only_packages(tmp_path):
    code = """
import importlib, pkgutil, sys
try:
    import grain
except ImportError:
    pass
else:
    raise SystemExit("the blocker did not work")
import peanut_jax.checkpoints as C
import peanut_jax.pipeline
for m in pkgutil.iter_modules(peanut_jax.pipeline.__path__):
    importlib.import_module("peanut_jax.pipeline." + m.name)
module, variables = C.load("spynet_demo")
C.load("interpolate_demo")
assert not any(n in sys.modules and sys.modules[n] is not None
               for n in ("tensorflow_datasets", "grain", "array_record"))
print("ok", type(module).__name__)
"""
    r = _run_without_training_packages(tmp_path, code)
    assert r.returncode == 0 and r.stdout.strip() == "ok SPyNet", r.stderr[-3000:]
    r = _run_without_training_packages(tmp_path, "", str(REPO / "infer.py"), "--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-3000:]
    r = _run_without_training_packages(tmp_path, "", "-m", "peanut_jax.checkpoints", "list")
    assert r.returncode == 0 and "erase_demo" in r.stdout, r.stderr[-3000:]


def test_declared_dependencies_match_the_imports():
    """Every third-party package imported by peanut_jax/ is declared in pyproject.toml (required or
    in the train extra), and nothing required is left unused."""
    import re
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def dist(req: str) -> str:
        return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")

    required = {dist(r) for r in meta["dependencies"]}
    train = {dist(r) for r in meta["optional-dependencies"]["train"]}
    module_to_dist = {
        "ml_collections": "ml-collections",
        "absl": "absl-py",
        "orbax": "orbax-checkpoint",
        "PIL": "pillow",
        "imageio_ffmpeg": "imageio-ffmpeg",
        "tensorflow_datasets": "tensorflow-datasets",
        "array_record": "array-record",
        "ml_dtypes": "ml-dtypes",
        "tensorboardX": "tensorboardx",
        "tensorflow": "tensorflow-datasets",
    }  # tf is only reached through tfds' own requirement
    imported = set()
    stdlib = set(sys.stdlib_module_names)
    for f in (REPO / "peanut_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            imported |= {t for t in tops if t not in stdlib and t != "peanut_jax"}
    used = {module_to_dist.get(m, m.lower().replace("_", "-")) for m in imported}
    optional = {dist(r) for extra, reqs in meta["optional-dependencies"].items() if extra != "test" for r in reqs}
    assert used - required - train - optional == set(), "imported but not declared"
    assert required - used == set(), "declared but never imported"
    for pkg in ("tensorflow-datasets", "grain", "array-record"):
        assert pkg in train and pkg not in required
    assert any(r.startswith("peanut_jax[train]") for r in meta["optional-dependencies"]["test"])
