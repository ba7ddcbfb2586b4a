"""The Experiment page's Processes field: shown only when several GPUs or CPU cores are there, and its value is
the launched run's ``processes`` (which the job manager then starts through torchrun)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from accelvit.runs import CANCELLED, RunStore
from accelvit.runs import jobs as jobs_mod
from accelvit.ui import forms, state
from test_app_pages import _column_with as column_with  # noqa: E402

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "1_Experiment.py")
TINY = {"exp:model": "swin_pico", "exp:data.img_size": 16, "exp:data.batch_size": 32, "exp:device": "cpu"}


@pytest.fixture(autouse=True)
def home(app_home):
    st.cache_data.clear()
    yield app_home
    st.cache_data.clear()


def page(limit: int, monkeypatch) -> AppTest:
    monkeypatch.setattr(state, "process_limit", lambda: limit)
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in TINY.items():
        at.session_state[k] = v
    return at.run()


def test_the_field_is_hidden_with_one_device_and_one_core(monkeypatch):
    at = page(1, monkeypatch)
    assert not at.exception
    assert not [n for n in at.number_input if n.key == "exp:processes"]


def test_the_field_sets_the_launched_runs_processes(home, monkeypatch):
    launched: list[tuple[str, int]] = []

    def fake_run(self, run_id, token, processes=1):  # what the job manager would hand to torchrun
        launched.append((run_id, processes))
        self.store.set_status(run_id, CANCELLED, error="not run in this test")

    monkeypatch.setattr(jobs_mod.JobManager, "_run_in_process", fake_run)
    at = page(4, monkeypatch)
    assert not at.exception
    field = at.number_input(key="exp:processes")
    assert field.label == "Processes" and field.max == 4 and field.value == 1
    assert "global batch" in field.help and "gloo" in field.help and "NCCL" in field.help
    field.set_value(3).run()  # 32 does not split over 3: the error is under the field, launch is blocked
    assert "multiple of 3" in " ".join(e.value for e in column_with(at, "exp:processes").error)
    assert at.button(key="launch").disabled
    at.number_input(key="exp:processes").set_value(2).run()
    assert not at.error and not at.button(key="launch").disabled
    at.button(key="launch").click().run()
    assert not at.exception
    runs = RunStore(home).runs_df()
    assert len(runs) == 1
    rid = runs.iloc[0]["id"]
    assert RunStore(home).get_run(rid)["config"]["processes"] == 2
    deadline = time.monotonic() + 30
    while RunStore(home).status(rid) != CANCELLED:  # the scheduler thread handed it over
        assert time.monotonic() < deadline, RunStore(home).status(rid)
        time.sleep(0.05)
    assert launched == [(rid, 2)]


def test_process_limit_counts_this_servers_gpus_or_cores():
    state.process_limit.clear()
    assert 1 <= state.process_limit() <= 64
    assert forms.build_config({**forms.DEFAULTS}).processes == 1
