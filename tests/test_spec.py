"""accelvit.spec: every crafted model folder of issue 13 is refused with a CheckpointError naming the
field, before any tensor is allocated; real folders (scratch and timm names) still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer

import accelvit.serialize as serialize
from accelvit import spec
from accelvit.errors import CheckpointError, ConfigError, ModelError
from accelvit.layout import SPEC_FILE, WEIGHTS_FILE
from accelvit.models import SCRATCH_CONFIGS, architecture_args, build_model, is_swin_v1
from accelvit.prune import PruneConfig, make_iht_hook, prune
from accelvit.serialize import load, read_spec, save
from accelvit.sparse_io import INDEX_KEY, load_sparse

CLASSES = [f"c{i}" for i in range(4)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("swin_pico", 4, drop_path_rate=0.0).eval()
    prune(model, PruneConfig(head_ratio=0.5, head_criterion="l1", rank_ratio=0.5))
    make_iht_hook(model, PruneConfig(sparsity=0.5)).finalize(model)  # sparse entries in the index
    return save(model, tmp_path_factory.mktemp("spec") / "m", class_names=CLASSES)


@pytest.fixture()
def copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "m"
    out.mkdir()
    for f in (SPEC_FILE, WEIGHTS_FILE):
        (out / f).write_bytes((folder / f).read_bytes())
    return out


@pytest.fixture()
def nothing_built(monkeypatch):
    """Fail the test if the loader gets as far as decoding weights or building a model."""
    def boom(*a, **k):
        raise AssertionError("allocated before the folder was refused")
    monkeypatch.setattr(serialize, "build_from_spec", boom)
    monkeypatch.setattr(serialize, "load_sparse", boom)
    monkeypatch.setattr(timm, "create_model", boom)


def _edit(folder: Path, fn) -> None:
    doc = json.loads((folder / SPEC_FILE).read_text())
    fn(doc)
    (folder / SPEC_FILE).write_text(json.dumps(doc))


def _refused(folder: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load(folder)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


# ------------------------------------------------------------------ finding 2: unbounded memory
@pytest.mark.parametrize("field, value, words", [
    ("embed_dim", 8192, ("parameters", "ACCELVIT_MAX_MODEL_PARAMS")),
    ("embed_dim", 1024, ("parameters",)),            # under the limit, but not what a 300 KB file holds
])
def test_huge_embed_dim_is_refused_before_allocation(copy, nothing_built, field, value, words) -> None:
    _edit(copy, lambda d: d["model"]["kwargs"].__setitem__(field, value))
    _refused(copy, *words)


def test_huge_num_classes_and_img_size_are_refused_before_allocation(copy, nothing_built) -> None:
    _edit(copy, lambda d: (d["model"].__setitem__("num_classes", 10**9), d.__setitem__("class_names", None)))
    _refused(copy, "model.num_classes", "1000000000")
    _edit(copy, lambda d: d["model"].__setitem__("num_classes", 300_000))  # in range: the weights disagree
    _refused(copy, "model.num_classes", "classifier")
    _edit(copy, lambda d: (d["model"].__setitem__("num_classes", 4), d["model"].__setitem__("img_size", 65536),
                           d.pop("input_size")))
    _refused(copy, "model.img_size", "65536")
    _edit(copy, lambda d: d["model"].__setitem__("img_size", 8192))  # in range: the activations are not
    _refused(copy, "GiB", "ACCELVIT_MAX_ACTIVATION_BYTES")


def test_depths_that_the_weights_do_not_hold_are_refused(copy, nothing_built) -> None:
    _edit(copy, lambda d: (d["model"]["kwargs"].__setitem__("depths", [2, 30]),))
    _refused(copy, "model.kwargs.depths", "[2, 30]")
    _edit(copy, lambda d: d["model"]["kwargs"].__setitem__("depths", [2, 2, 2]))
    _refused(copy, "model.kwargs.num_heads", "one head count per stage")


@pytest.mark.parametrize("key, value", [("foo", 1), ("checkpoint_path", "/etc/passwd"),
                                        ("pretrained_cfg_overlay", {"file": "/etc/passwd"}), ("in_chans", 1)])
def test_constructor_kwargs_outside_the_allow_list_never_reach_timm(copy, nothing_built, key, value) -> None:
    _edit(copy, lambda d: d["model"]["kwargs"].__setitem__(key, value))
    _refused(copy, f"model.kwargs.{key}", "may set only")


def test_build_model_refuses_unknown_kwargs_too(monkeypatch) -> None:
    with pytest.raises(ModelError, match="model.kwargs.checkpoint_path"):
        build_model("swin_pico", 3, checkpoint_path="/etc/passwd")
    with pytest.raises(ModelError, match="model.kwargs.foo"):
        build_model("swin_tiny_patch4_window7_224", 3, foo=1)


# ---------------------------------------------------------------------- finding 7: tracebacks
@pytest.mark.parametrize("heads", [[2, 0], [0, 4], [2, -1], [2, 100], [2, "4"], [2, 4.0], "x", [], [2, True]])
def test_bad_num_heads_is_a_named_error(copy, nothing_built, heads) -> None:
    _edit(copy, lambda d: d["model"]["kwargs"].__setitem__("num_heads", heads))
    _refused(copy, "model.kwargs.num_heads")


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_spec_is_a_named_error(copy, depth) -> None:
    doc = json.loads((copy / SPEC_FILE).read_text())
    text = json.dumps(doc)[:-1] + ', "meta2": ' + "[" * depth + "]" * depth + "}"
    (copy / SPEC_FILE).write_text(text)
    _refused(copy, "nested")


def test_huge_spec_file_is_refused_unread(copy, monkeypatch) -> None:
    _edit(copy, lambda d: d["meta"].__setitem__("blob", "x" * (5 * 1024**2)))
    _refused(copy, "bytes", "ACCELVIT_MAX_SPEC_BYTES")
    monkeypatch.setenv("ACCELVIT_MAX_SPEC_BYTES", str(8 * 1024**2))
    load(copy)  # admitted when the limit is raised


@pytest.mark.parametrize("names, words", [
    (5, ("class_names", "a list of 4 names")),
    (["a", "b"], ("class_names has 2 names", "expected 4")),
    (["a", "b", "c", "d", "e"], ("class_names has 5 names",)),
    (["a", "b", 3, "d"], ("class_names[2]", "a text")),
    ("abcd", ("class_names",)),
])
def test_class_names_must_be_one_string_per_class(copy, names, words) -> None:
    _edit(copy, lambda d: d.__setitem__("class_names", names))
    _refused(copy, *words)


def test_class_names_may_be_absent(copy) -> None:
    _edit(copy, lambda d: d.__setitem__("class_names", None))
    load(copy)


@pytest.mark.parametrize("where, value, field", [
    ("model.std", [0.5, 0, 0.5], "model.std"),
    ("model.std", [0.5, 0.5], "model.std"),
    ("model.mean", ["a", 0.5, 0.5], "model.mean[0]"),
    ("normalization.std", [0.0, 0.0, 0.0], "normalization.std"),
    ("meta.data.std", [0, 1, 1], "meta.data.std"),
    ("meta.data.mean", [float("nan"), 0.5, 0.5], "meta.data.mean[0]"),
    ("meta.data", [1, 2], "meta.data"),
])
def test_normalisation_must_be_three_finite_numbers_with_positive_std(copy, where, value, field) -> None:
    def put(d):
        keys = where.split(".")
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    _edit(copy, put)
    _refused(copy, field)


def test_structure_fields_are_typed(copy, nothing_built) -> None:
    doc = json.loads((copy / SPEC_FILE).read_text())
    name = next(iter(doc["structure"]["lowrank"]))
    _edit(copy, lambda d: d["structure"]["lowrank"][name].__setitem__("rank", "12"))
    _refused(copy, "rank", "'12'")
    _edit(copy, lambda d: d["structure"].__setitem__("mlp", {"layers.0.blocks.0.mlp": {"hidden": 8, "hidden_orig": "x"}}))
    _refused(copy, "hidden_orig")


def _rewrite_index(folder: Path, fn) -> None:
    path = str(folder / WEIGHTS_FILE)
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    idx = json.loads(meta[INDEX_KEY])
    fn(idx, tensors)
    meta[INDEX_KEY] = idx if isinstance(idx, str) else json.dumps(idx)
    save_file(tensors, path, metadata=meta)


@pytest.mark.parametrize("damage, words", [
    (lambda i, t: i.__setitem__("sparse", "x"), ("'sparse'", "'x'")),
    (lambda i, t: i.__setitem__("order", 5), ("'order'",)),
    (lambda i, t: next(iter(i["sparse"].values())).__setitem__("shape", [10**6, 10**6]), ("mask", "entries")),
    (lambda i, t: next(iter(i["sparse"].values())).__setitem__("shape", "x"), ("shape",)),
    (lambda i, t: next(iter(i["sparse"].values())).__setitem__("dtype", "object"), ("dtype",)),
    (lambda i, t: next(iter(i["sparse"].values())).__setitem__("values", "nope"), ("values",)),
    (lambda i, t: next(iter(i["sparse"].values())).__setitem__("dtype", "int32"), ("values",)),
    (lambda i, t: i["order"].append("ghost"), ("ghost",)),
])
def test_sparse_index_corruptions_are_named_errors(copy, damage, words) -> None:
    _rewrite_index(copy, damage)
    _refused(copy, *words)
    with pytest.raises(CheckpointError):
        load_sparse(copy / WEIGHTS_FILE)


def test_sparse_index_nested_too_deeply(copy) -> None:
    def deep(i, t):
        i["extra"] = json.loads("[" * 500 + "]" * 500)
    _rewrite_index(copy, deep)
    _refused(copy, "nested")


# ------------------------------------------------------------------------ what still loads
def test_the_saved_folder_loads_and_its_cost_is_the_real_parameter_count(folder) -> None:
    model, doc = load(folder)
    assert doc["class_names"] == CLASSES
    checked = spec.check_doc(read_spec(folder), "x", architecture_args)
    assert checked.cost.params == sum(p.numel() for p in build_model("swin_pico", 4).parameters())


@pytest.mark.parametrize("name, size", [("swin_tiny_patch4_window7_224", 224), ("swin_base_patch4_window7_224", 224),
                                        ("swin_base_patch4_window12_384", 384), ("swin_large_patch4_window12_384", 384),
                                        ("swin_s3_tiny_224", 224), ("swin_micro", 32), ("swin_small32", 32)])
def test_the_estimate_is_exact_for_swin_and_the_default_limits_admit_swin_b_and_l(name, size) -> None:
    arch = spec.architecture(architecture_args(name), {}, size)
    cost = spec.estimate_cost(arch, size, 1000)
    spec.check_cost(cost, spec.Limits(), "x", name)  # admitted by the defaults
    with torch.device("meta"):
        if name in SCRATCH_CONFIGS:
            real = SwinTransformer(**{**SCRATCH_CONFIGS[name], "img_size": size, "num_classes": 1000})
        else:
            real = timm.create_model(name, num_classes=1000, img_size=size)
    assert cost.params == sum(p.numel() for p in real.parameters())


def test_every_timm_swin_name_has_an_architecture() -> None:
    for name in timm.list_models("swin*"):
        args = architecture_args(name)
        assert args and "embed_dim" in args and "depths" in args, name
    assert is_swin_v1("swin_tiny_patch4_window7_224") and not is_swin_v1("swinv2_tiny_window8_256")
    assert architecture_args("swin_nonexistent") is None


def test_a_timm_swin_round_trips(tmp_path: Path) -> None:
    model = build_model("swin_tiny_patch4_window7_224", 3, img_size=64).eval()
    loaded, _ = load(save(model, tmp_path / "t"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_limits_come_from_the_environment(copy, monkeypatch) -> None:
    monkeypatch.setenv("ACCELVIT_MAX_MODEL_PARAMS", "1000")
    _refused(copy, "ACCELVIT_MAX_MODEL_PARAMS", "at most 1,000")
    monkeypatch.setenv("ACCELVIT_MAX_MODEL_PARAMS", "lots")
    with pytest.raises(ConfigError, match="ACCELVIT_MAX_MODEL_PARAMS"):
        load(copy)
    monkeypatch.delenv("ACCELVIT_MAX_MODEL_PARAMS")
    monkeypatch.setenv("ACCELVIT_MAX_ACTIVATION_BYTES", "1000")
    _refused(copy, "ACCELVIT_MAX_ACTIVATION_BYTES")


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.__setitem__("version", True), "version"),
    (lambda d: d.__setitem__("version", 0), "version"),
    (lambda d: d["model"].pop("img_size"), "model.img_size"),
    (lambda d: d["model"].__setitem__("colour", "red"), "model.colour"),
    (lambda d: d["model"].__setitem__("kwargs", [1]), "model.kwargs"),
    (lambda d: d["model"]["kwargs"].__setitem__("mlp_ratio", 0), "model.kwargs.mlp_ratio"),
    (lambda d: d["model"]["kwargs"].__setitem__("drop_path_rate", 1.5), "model.kwargs.drop_path_rate"),
    (lambda d: d["model"]["kwargs"].__setitem__("patch_size", 64), "model.kwargs.patch_size"),
    (lambda d: d.__setitem__("input_size", [3, 99, 99]), "input_size"),
    (lambda d: d.__setitem__("params", -1), "params"),
    (lambda d: d.__setitem__("meta", "x"), "meta"),
])
def test_other_fields_are_named(copy, edit, field) -> None:
    _edit(copy, edit)
    assert f"{field} is" in _refused(copy)
