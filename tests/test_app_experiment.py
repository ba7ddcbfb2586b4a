"""The Experiment page's form through ``streamlit.testing.v1.AppTest``: the cost preview is recomputed
only when it can change, emptied number fields are errors, a run that prunes nothing says so, a
sweep reports every bad value and what its estimate covers, and timm models start offline.

Each test has its own run store (ACCELVIT_HOME) and the tiny swin_pico at 16 px; nothing is launched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from accelvit.experiment import estimate
from accelvit.runs import RunStore
from accelvit.ui import forms
from test_app_pages import _column_with as column_with  # noqa: E402  (the page puts field errors there)

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "1_Experiment.py")
TINY = {"exp:model": "swin_pico", "exp:data.img_size": 16}


@pytest.fixture(autouse=True)
def home(app_home):
    return app_home


@pytest.fixture
def calls(monkeypatch):
    """Every estimate computed by the page (its cache emptied first), as the keys it was asked for."""
    st.cache_data.clear()
    seen: list[dict] = []
    real = estimate.estimate_from_key

    def counting(key):
        seen.append(key)
        return real(key)

    monkeypatch.setattr(estimate, "estimate_from_key", counting)
    yield seen
    st.cache_data.clear()


def page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in {**TINY, **state}.items():
        at.session_state[k] = v
    return at.run()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_estimate_is_not_recomputed_for_epochs_lr_seed_or_name(home, calls):
    at = page()
    ok(at)
    assert len(calls) == 1 and calls[0]["model"] == "swin_pico" and calls[0]["img_size"] == 16
    first = {m.label: (m.value, m.delta) for m in at.metric}
    assert first["Dense FLOPs / image"][1].startswith("-")
    at.number_input(key="exp:train.epochs").set_value(3).run()
    at.number_input(key="exp:finetune.lr").set_value(0.001).run()
    at.number_input(key="exp:seed").set_value(7).run()
    at.text_input(key="exp:name").set_value("renamed").run()
    at.selectbox(key="exp:prune.head_criterion").set_value("l1").run()  # the preview uses l1 already
    ok(at)
    assert len(calls) == 1  # five edits, the same estimate from the cache
    assert {m.label: (m.value, m.delta) for m in at.metric} == first
    at.slider(key="exp:prune.head_ratio").set_value(0.25).run()  # this one changes what is pruned
    ok(at)
    assert len(calls) == 2 and calls[1]["prune"]["head_ratio"] == 0.25
    assert {m.label: m.value for m in at.metric} != {k: v[0] for k, v in first.items()}
    assert not RunStore(home).list_runs()  # editing launches nothing


def test_an_emptied_number_field_is_an_error_and_blocks_launch(calls):
    at = page()
    ok(at)
    assert not at.button(key="launch").disabled
    at.number_input(key="exp:data.img_size").set_value(None).run()
    ok(at)
    assert at.number_input(key="exp:data.img_size").value is None  # not silently its minimum (8)
    assert "Image size is empty: enter a number." in texts(column_with(at, "exp:data.img_size").error)
    assert at.button(key="launch").disabled
    at.number_input(key="exp:train.lr").set_value(None).run()
    assert "Baseline learning rate is empty" in texts(column_with(at, "exp:train.lr").error)
    at.number_input(key="exp:data.img_size").set_value(16)
    at.number_input(key="exp:train.lr").set_value(0.002).run()
    ok(at)
    assert not at.error and not at.button(key="launch").disabled


def test_a_run_that_prunes_nothing_says_so_without_red_deltas(calls):
    at = page(**{"exp:prune.head_ratio": 0.0, "exp:prune.sparsity": 0.0, "exp:svd_mode": "off"})
    ok(at)
    assert "This run prunes nothing: it only trains and measures a baseline." in texts(at.info)
    assert len(at.metric) == 4
    for m in at.metric:
        assert m.proto.color != MetricProto.MetricColor.RED and m.proto.direction == MetricProto.MetricDirection.NONE
        assert "+0%" not in m.delta
    assert not at.button(key="launch").disabled  # still launchable: a baseline measurement
    at.slider(key="exp:prune.sparsity").set_value(0.5).run()  # IHT only: dense FLOPs do not change
    ok(at)
    assert "prunes nothing" not in texts(at.info)
    got = {m.label: m for m in at.metric}
    dense = got["Dense FLOPs / image"]
    assert dense.delta.startswith("no change") and dense.proto.direction == MetricProto.MetricDirection.NONE
    assert got["Effective FLOPs"].delta.startswith("-") and got["Effective FLOPs"].proto.color == \
        MetricProto.MetricColor.GREEN


def test_a_sweep_reports_every_bad_value_and_says_what_its_estimate_covers(calls):
    at = page(**{"exp:sweep": True, "exp:prune.mlp_ratio": 0.5})
    at.text_input(key="exp:sweep.head_ratio").set_value("1.5, x, 0.5, 2")
    at.text_input(key="exp:sweep.sparsity").set_value("abc").run()
    ok(at)
    heads = texts(column_with(at, "exp:sweep.head_ratio").error)
    assert heads.startswith("Head ratios: '1.5' is outside [0, 1); 'x' is not a number; '2' is outside")
    assert "'abc' is not a number" in texts(column_with(at, "exp:sweep.sparsity").error)
    assert at.button(key="launch").disabled
    at.text_input(key="exp:sweep.head_ratio").set_value("0.25, 0.5, 0.75")
    at.text_input(key="exp:sweep.sparsity").set_value("")
    at.text_input(key="exp:sweep.target_flops").set_value("0.7, 0.5").run()
    ok(at)
    assert not at.error and at.button(key="launch").label == "Launch sweep (6 runs)"
    note = next(c.value for c in at.caption if c.value.startswith("Sweep of"))
    assert "6 runs: head ratio 0.25-0.75 (3 values) x FLOP target 0.5-0.7" in note
    assert "(head ratio 0.25, FLOP target 0.7)" in note and "(head ratio 0.75, FLOP target 0.5)" in note
    dense = {m.label: m for m in at.metric}["Dense FLOPs / image"]
    assert " – " in dense.value and " to " in dense.delta  # the range over the sweep
    assert sorted(k["prune"]["target_flops"] for k in calls[-2:]) == [0.5, 0.7]


def test_timm_models_start_from_offline_weights(calls):
    at = page()
    calls.clear()
    at.radio(key="exp:model_source").set_value("timm").run()
    ok(at)
    weights = at.radio(key="exp:timm_weights")
    assert weights.value == "random"
    assert weights.options[-1] == forms.TIMM_WEIGHTS["pretrained"] and "(needs network)" in weights.options[-1]
    cfg = forms.validate_form({k: at.session_state["exp:" + k] for k in forms.DEFAULTS}).config
    assert cfg is not None and not cfg.pretrained and cfg.weights_path is None
    assert not calls and at.button(key="estimate")  # big models are estimated on request only
    weights.set_value("pretrained").run()
    assert "without network access the run fails" in texts(at.caption)
