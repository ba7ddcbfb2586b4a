"""ONNX export: a pruned + low-rank + sparse Swin exports, onnxruntime reproduces PyTorch, errors are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from accelvit import card
from accelvit import export as ex
from accelvit import serialize
from accelvit.cli import main
from accelvit.errors import CheckpointError, ConfigError
from accelvit.layers import LowRankLinear
from accelvit.models import build_model
from accelvit.prune import PruneConfig, make_iht_hook, prune

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'accelvit[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'accelvit[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'accelvit[onnx]')")

CLASSES = [f"c{i}" for i in range(10)]


def _pruned_sparse_pico() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10, drop_path_rate=0.0)
    cfg = PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.25, mlp_criterion="l1", rank_ratio=0.5,
                      sparsity=0.5)
    prune(model, cfg)
    make_iht_hook(model, cfg).finalize(model)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A pruned (heads, MLP width), low-rank and 50%-sparse swin_pico saved with a digits data config,
    exported once with the default (dynamo) exporter: ``(folder, OnnxExport, model)``."""
    model = _pruned_sparse_pico()
    folder = serialize.save(model, tmp_path_factory.mktemp("pico") / "m", class_names=CLASSES,
                            meta={"data": {"dataset": "digits", "img_size": 16, "augment": False}})
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = ex.export_folder(folder)
    finally:
        torch.set_num_threads(n)
    return folder, result, model


def test_pruned_lowrank_sparse_model_exports_and_matches_in_onnxruntime(exported):
    folder, result, model = exported
    assert any(isinstance(m, LowRankLinear) for m in model.modules())
    path = Path(result.path)
    assert path == folder / ex.ONNX_FILE and path.stat().st_size == result.file_bytes
    # checked on real digits test images, as two batches of different sizes (dynamic batch)
    assert result.verify_inputs == "16 test images of digits" and result.verify_batches == [15, 1]
    assert result.max_abs_diff <= 1e-4
    # our own check, independent of the one export_folder made: batch sizes it did not see
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [ex.INPUT_NAME]
    for bs in (1, 3, 7):
        x = torch.randn(bs, 3, 16, 16, generator=torch.Generator().manual_seed(bs))
        got = sess.run(None, {ex.INPUT_NAME: x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (bs, 10)
        assert abs(got - ref).max() <= 1e-4
    # low-rank layers are two MatMuls: pico's 2 stages x 2 blocks x 4 linears, each factorised (see notes)
    assert result.ops["MatMul"] >= 2 * 16
    assert any("two MatMuls" in n for n in result.notes)
    assert any("IHT zeros are stored dense" in n for n in result.notes)
    # the record beside the file and the ONNX metadata
    rec = json.loads((folder / ex.ONNX_REPORT).read_text())
    assert rec["max_abs_diff"] == result.max_abs_diff and card.read_export(folder)["path"] == str(path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == CLASSES and json.loads(meta["input_size"]) == [3, 16, 16]


def test_onnx_file_holds_the_sparse_weights_dense(exported):
    """What the notes say: IHT zeros take full space in ONNX; the pruned shapes are what is stored."""
    folder, result, model = exported
    from onnx import numpy_helper

    proto = onnx.load(result.path)
    stored = sum(numpy_helper.to_array(i).size for i in proto.graph.initializer)
    params = sum(p.numel() for p in model.parameters())
    # every parameter is stored (the exporter may fold a few constants or drop duplicate zero biases)
    assert 0.95 * params <= stored <= 1.5 * params
    assert result.file_bytes > (folder / serialize.WEIGHTS_FILE).stat().st_size


def test_torchscript_exporter_and_fixed_batch(exported, tmp_path):
    folder, _, model = exported
    result = ex.export_folder(folder, out=tmp_path / "fixed.onnx", exporter="torchscript", opset=17,
                              dynamic_batch=False)
    assert result.input_shape == [2, 3, 16, 16] and result.verify_batches == [2] * 8 and result.max_abs_diff <= 1e-4
    assert not (tmp_path / ex.ONNX_REPORT).exists()  # the record is written only beside a folder's own export
    with pytest.raises(ex.ExportError, match="fixed batch of 2"):
        ex.onnx_latency(model, result.path, batch_sizes=(1, 4), warmup=0, reps=1)


def test_export_of_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError):
        ex.export_folder(tmp_path)
    assert main(["export", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"error: {tmp_path} is not an accelvit model") and "Traceback" not in err


def test_a_failing_operator_is_named(exported, monkeypatch, tmp_path):
    _, _, model = exported

    def boom(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::roll' to ONNX opset version 17 is not supported.")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(ex.ExportError, match=r"the operator aten::roll did not export.*--exporter torchscript"):
        ex.export_onnx(model, tmp_path / "x.onnx", [3, 16, 16])
    assert not list(tmp_path.iterdir())  # no half-written file left behind


def test_an_export_that_differs_from_pytorch_is_refused_and_kept_aside(exported, monkeypatch, tmp_path):
    folder, _, model = exported
    monkeypatch.setattr(ex, "max_abs_diff", lambda *a, **k: 0.25)
    with pytest.raises(ex.ExportError, match=r"does not reproduce the PyTorch model: max \|difference\| .*0.25"):
        ex.export_folder(folder, out=tmp_path / "bad.onnx", exporter="torchscript", opset=17)
    assert (tmp_path / "bad.unverified.onnx").exists() and not (tmp_path / "bad.onnx").exists()


def test_bad_options_and_missing_extra(exported, monkeypatch, tmp_path):
    _, _, model = exported
    with pytest.raises(ConfigError, match="opset 18 or newer"):
        ex.export_onnx(model, tmp_path / "x.onnx", [3, 16, 16], opset=13)
    with pytest.raises(ConfigError, match="unknown exporter 'tflite'"):
        ex.export_onnx(model, tmp_path / "x.onnx", [3, 16, 16], exporter="tflite")
    real = ex.importlib.import_module

    def no_ort(name, *a):
        if name == "onnxruntime":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(ex.importlib, "import_module", no_ort)
    with pytest.raises(ex.ExportError, match=r"needs onnxruntime, which is not installed.*accelvit\[onnx\]"):
        ex.require_onnx()


def test_measure_times_onnxruntime_beside_pytorch(exported, capsys):
    folder, result, _ = exported
    argv = ["measure", "--checkpoint", str(folder), "--onnx", "--json", "--no-thop", "--warmup", "0", "--reps", "2",
            "--batch-size", "4", "--threads", "1"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    o = d["onnxruntime"]
    assert o["path"] == result.path and o["threads"] == 1 and o["provider"] == "CPUExecutionProvider"
    assert [p["batch_size"] for p in o["points"]] == [1, 4]
    for p in o["points"]:
        assert p["pytorch"]["reps"] == 2 and p["onnxruntime"]["reps"] == 2
        assert p["speedup"] == pytest.approx(p["pytorch"]["median_ms"] / p["onnxruntime"]["median_ms"])
    assert main(["measure", "--checkpoint", str(folder), "--onnx", "missing.onnx", "--no-latency"]) == 2
    assert "onnx: missing.onnx is not a file" in capsys.readouterr().err
