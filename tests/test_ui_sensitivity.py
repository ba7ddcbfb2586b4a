"""The Results page's sensitivity heatmap from a hand-made prune report: exact cells, per-kind
normalisation, missing kinds blank (not zero) with the reason."""

from __future__ import annotations

import math

import pytest

from accelvit.ui import sensitivity as sens


def report(**cfg) -> dict:
    """Two stages, one block each, a stage-1 downsample; heads scored by taylor, MLP not pruned, SVD on
    qkv and fc1 of block s0.b0 / s1.b0 and the downsample (left dense)."""
    return {"config": {"head_ratio": 0.5, "mlp_ratio": 0.0, "rank_ratio": 0.5, "head_criterion": "taylor",
                       "mlp_criterion": "taylor", **cfg},
            "sensitivity": [
                {"module": "layers.0.blocks.0.attn", "kind": "heads", "stage": 0, "measure": "taylor", "units": 2,
                 "kept": 1, "score_sum": 0.4, "score_mean": 0.2, "score_mean_kept": 0.3, "score_mean_removed": 0.1},
                {"module": "layers.1.blocks.0.attn", "kind": "heads", "stage": 1, "measure": "taylor", "units": 4,
                 "kept": 3, "score_sum": 3.2, "score_mean": 0.8, "score_mean_kept": 1.0,
                 "score_mean_removed": 0.2},
                {"module": "layers.0.blocks.0.attn.qkv", "kind": "rank", "stage": 0, "measure": "svd_energy",
                 "units": 32, "kept": 9, "dense": False, "energy_discarded": 0.1},
                {"module": "layers.1.blocks.0.mlp.fc1", "kind": "rank", "stage": 1, "measure": "svd_energy",
                 "units": 64, "kept": 16, "dense": False, "energy_discarded": 0.4},
                {"module": "layers.1.downsample.reduction", "kind": "rank", "stage": 1, "measure": "svd_energy",
                 "units": 32, "kept": 32, "dense": True, "energy_discarded": 0.0},
            ]}


def test_frame_has_one_cell_per_row_in_model_order_normalised_per_kind():
    df = sens.sensitivity_frame(report())
    assert list(df.columns) == sens.SENSITIVITY_COLUMNS
    # model order: stage 0's block, then stage 1's downsample (timm merges patches first), then its block
    assert list(zip(df["layer"], df["column"])) == [("s0.b0", "heads"), ("s0.b0", "rank qkv"),
                                                    ("s1.downsample", "rank reduction"), ("s1.b0", "heads"),
                                                    ("s1.b0", "rank fc1")]
    cell = df.set_index(["layer", "column"])
    assert cell.loc[("s0.b0", "heads"), "value"] == 0.2 and cell.loc[("s1.b0", "heads"), "value"] == 0.8
    assert cell.loc[("s0.b0", "heads"), "normalized"] == pytest.approx(0.25)  # 0.2 / 0.8: per kind
    assert cell.loc[("s1.b0", "heads"), "normalized"] == 1.0
    assert cell.loc[("s0.b0", "rank qkv"), "normalized"] == pytest.approx(0.25)  # 0.1 / 0.4
    assert cell.loc[("s1.b0", "rank fc1"), "normalized"] == 1.0
    assert cell.loc[("s1.downsample", "rank reduction"), "normalized"] == 0.0  # measured zero, not missing
    assert [cell.loc[k, "text"] for k in [("s0.b0", "heads"), ("s1.b0", "heads"), ("s0.b0", "rank qkv"),
                                          ("s1.downsample", "rank reduction")]] == ["1/2", "3/4", "r9/32", "dense"]
    assert "mean Taylor score" in cell.loc[("s1.b0", "heads"), "what"] and "0.8" in cell.loc[("s1.b0", "heads"), "what"]
    assert cell.loc[("s1.b0", "rank fc1"), "what"].startswith("40.0% of the weight's spectral energy discarded")


def test_heatmap_cells_and_a_missing_kind_blank_with_its_reason():
    fig = sens.sensitivity_heatmap(report())
    hm = fig.data[0]
    assert list(hm.y) == ["s0.b0", "s1.downsample", "s1.b0"]
    assert list(hm.x) == ["heads", "MLP<br>(no data)", "rank qkv", "rank fc1", "rank reduction"]
    z = [list(row) for row in hm.z]
    assert z[0] == [pytest.approx(0.25), None, pytest.approx(0.25), None, None]
    assert z[1] == [None, None, None, None, 0.0]
    assert z[2] == [1.0, None, None, 1.0, None]
    assert all(row[1] is None for row in z)  # the MLP column is blank, not zeros
    assert [list(r) for r in hm.text] == [["1/2", "", "r9/32", "", ""], ["", "", "", "", "dense"],
                                          ["3/4", "", "", "r16/64", ""]]
    assert "÷ max" in hm.colorbar.title.text and "of the most sensitive layer" in hm.hovertemplate
    assert fig.layout.meta["notes"] == {"mlp": "this run did not prune MLP width"}
    assert any("MLP: this run did not prune MLP width" in (a.text or "") for a in fig.layout.annotations)


def test_score_per_mflop_is_the_value_where_the_flop_target_ranked_by_it():
    r = report(target_flops=0.5)
    for row in r["sensitivity"]:
        if row["kind"] == "heads":
            row.update(flops_per_unit=2e6, score_per_mflop=row["score_mean"] / 2)
    df = sens.sensitivity_frame(r).set_index(["layer", "column"])
    assert df.loc[("s0.b0", "heads"), "value"] == pytest.approx(0.1)
    assert "per MFLOP" in df.loc[("s0.b0", "heads"), "what"]
    # the search pruned MLP width not at all: said so
    assert sens.sensitivity_notes(r)["mlp"] == "the FLOP-target search did not prune MLP width"


def test_reasons_when_nothing_was_measured():
    assert sens.sensitivity_frame(None).empty and sens.sensitivity_frame({"sensitivity": None}).empty
    assert "no pruning report" in sens.no_sensitivity_message(None)
    rnd = {"config": {"head_ratio": 0.5, "head_criterion": "random", "mlp_ratio": 0.0, "rank_ratio": None},
           "sensitivity": None}
    msg = sens.no_sensitivity_message(rnd)
    assert "heads: the random criterion measures nothing" in msg and "rank: no SVD in this run" in msg
    old = {"config": {"head_ratio": 0.5, "head_criterion": "taylor", "rank_ratio": 0.5}, "layers": []}
    notes = sens.sensitivity_notes(old)
    assert notes["heads"].startswith("not recorded (the run predates") and notes["rank"].startswith("not recorded")
    assert sens.no_sensitivity_message(report()) is None
    fig = sens.sensitivity_heatmap(rnd)
    assert not fig.data and any("No sensitivity" in (a.text or "") for a in fig.layout.annotations)
    # random rows appended by the FLOP-target ranking are not shown as measurements
    r = report()
    r["sensitivity"].append({"module": "layers.0.blocks.0.mlp", "kind": "mlp", "measure": "random", "units": 8,
                             "kept": 4, "score_mean": 0.5})
    assert "MLP" not in set(sens.sensitivity_frame(r)["column"])


def test_older_rows_without_a_measure_take_the_configs_criterion_and_gradual_runs_say_whose_step():
    r = report()
    for row in r["sensitivity"]:
        row.pop("measure")
    r["steps"] = [{"step": 1}, {"step": 2}]
    df = sens.sensitivity_frame(r)
    assert "Taylor score" in df.loc[df["column"] == "heads", "what"].iloc[0]
    assert not any(math.isnan(v) for v in df["normalized"])
    assert "last step" in sens.sensitivity_notes(r)["steps"]
