"""Dashboard helpers. Pure, unit-testable pieces live here; the Streamlit pages stay thin.

- :mod:`accelvit.ui.charts`: Plotly figures built from the store's DataFrames
  (ratios from :func:`accelvit.runs.queries.ratio_to_before`).
- :mod:`accelvit.ui.tables`: the runs and metrics tables, the latency summary and the
  display formats (``fmt_*``, ``MISSING``); imports ``charts``, never the other way.
- :mod:`accelvit.ui.forms`: the Experiment form's defaults, config building, validation
  mapped to fields, the quick demo, cost estimates before launching.
- :mod:`accelvit.ui.inference`: upload checks, model loading, top-k predictions, latency.
- :mod:`accelvit.ui.state`: the one job manager per server (``st.cache_resource``), device choices.
- :mod:`accelvit.ui.live`: the live view of a run (``st.fragment(run_every=...)``).

Only ``state`` and ``live`` import Streamlit.
"""
