"""Fuzz: damaged model folders end in an AccelvitError or a correct load, never another exception,
and memory stays bounded.

The cases run in a child process (this file run as a script) under ``RLIMIT_AS`` = its address
space after a warm-up + 1.5 GiB, so an allocation the checks failed to stop is a MemoryError
there (a failure) rather than a stalled machine. Targets: :func:`accelvit.serialize.load`,
:func:`accelvit.metrics.measure` (latency=False, thop=False) on what loads, and the Inference
page's loader (``accelvit.ui.inference.load_model`` + ``predict``). Cases: truncations and bit
flips of ``model.safetensors`` (header and data), every spec field wrong-typed / zero /
negative / huge / missing / extra, sparse-index corruptions, and hypothesis-drawn JSON values
in random spec fields. Deterministic (hypothesis derandomised, no database); a swin_pico folder
(heads, MLP, low-rank and sparse entries) so each load takes milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


CPU_LIMIT_S = 60
EXTRA_MEMORY = 1536 * 1024**2  # address space allowed beyond the warmed-up worker
RSS_BOUND = 1024 * 1024**2     # peak RSS allowed beyond the warmed-up worker


def test_damaged_model_folders_end_in_our_errors_with_bounded_memory(tmp_path: Path) -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    t0, cpu0 = time.monotonic(), _children_cpu()
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=5 * CPU_LIMIT_S, cwd=tmp_path)  # hypothesis writes .hypothesis/ there
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {report['cases']} cases, {cpu:.1f} s CPU ({wall:.1f} s wall) {report['outcomes']}; "
          f"CPU s by section {report['cpu_s']}; peak RSS {report['peak_rss_mb']:.0f} MB "
          f"(warm {report['warm_rss_mb']:.0f} MB)")
    assert not report["failures"], json.dumps(report["failures"][:20], indent=1)
    assert report["cases"] >= 500 and report["outcomes"]["refused"] > 0 and report["outcomes"]["loaded"] > 0
    assert report["outcomes"]["measured"] > 0
    assert report["peak_rss_mb"] - report["warm_rss_mb"] < RSS_BOUND / 2**20
    # one core's time (a busy machine stretches the wall clock, not this)
    assert cpu < CPU_LIMIT_S, f"the fuzz cases took {cpu:.0f} s of CPU; keep them under {CPU_LIMIT_S} s"


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------- the child process
def _worker(work: Path) -> dict:  # pragma: no cover - runs in the child
    import copy
    import resource

    import torch
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    from accelvit.errors import AccelvitError
    from accelvit.layout import SPEC_FILE, WEIGHTS_FILE
    from accelvit.metrics import measure
    from accelvit.models import build_model
    from accelvit.prune import PruneConfig, make_iht_hook, prune
    from accelvit.serialize import load, save
    from accelvit.sparse_io import INDEX_KEY
    from accelvit.ui.inference import load_model, predict

    clock = [time.process_time()]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("swin_pico", 4, drop_path_rate=0.0).eval()
    prune(model, PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.25, mlp_criterion="l1",
                             rank_ratio=0.5))
    make_iht_hook(model, PruneConfig(sparsity=0.5)).finalize(model)
    base = save(model, work / "base", class_names=["a", "b", "c", "d"],
                meta={"data": {"mean": [0.5] * 3, "std": [0.5] * 3}, "note": "fuzz"})
    good_spec = json.loads((base / SPEC_FILE).read_text())
    good_weights = (base / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(good_weights[:8], "little")
    with safe_open(str(base / WEIGHTS_FILE), framework="pt") as f:
        st_meta = dict(f.metadata())
        st_tensors = {k: f.get_tensor(k) for k in f.keys()}
    good_index = json.loads(st_meta[INDEX_KEY])
    image = Image.new("RGB", (20, 20), (120, 30, 200))
    case_dir = work / "case"
    case_dir.mkdir()

    outcomes = {"refused": 0, "loaded": 0, "measured": 0}
    failures: list[dict] = []
    state = {"cases": 0, "measures": 0}

    def run(name: str, spec_text: str | bytes | None = None, weights: bytes | None = None) -> None:
        state["cases"] += 1
        (case_dir / SPEC_FILE).write_bytes(spec_text.encode() if isinstance(spec_text, str) else
                                           (spec_text if spec_text is not None else json.dumps(good_spec).encode()))
        (case_dir / WEIGHTS_FILE).write_bytes(weights if weights is not None else good_weights)
        try:
            m, doc = load(case_dir)
            n = doc["model"]["num_classes"]
            size = doc["model"]["img_size"]
            with torch.inference_mode():
                out = m(torch.zeros(1, 3, size, size))
            assert out.shape == (1, n), f"logits {tuple(out.shape)} for {n} classes"
            outcomes["loaded"] += 1
            if state["measures"] < 25:  # measure is ~50 ms: a sample of what loads
                state["measures"] += 1
                measure(m, latency=False, thop=False)
                outcomes["measured"] += 1
        except AccelvitError:
            outcomes["refused"] += 1
        except BaseException as exc:  # noqa: BLE001 - the finding
            failures.append({"case": name, "target": "load/measure", "error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        try:
            lm = load_model(case_dir, "model")
            table = predict(lm, image, k=3)
            assert len(table) == min(3, lm.doc["model"]["num_classes"])
        except AccelvitError:
            pass
        except BaseException as exc:  # noqa: BLE001
            failures.append({"case": name, "target": "inference", "error": f"{type(exc).__name__}: {exc}"[:300]})

    # warm up (imports, first forward), then cap the address space
    run("intact")
    assert not failures and outcomes["loaded"] == 1, failures
    vm = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmSize:"))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + EXTRA_MEMORY, resource.RLIM_INFINITY))
    warm_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    timings: dict[str, float] = {}

    def lap(section: str) -> None:
        now = time.process_time()
        timings[section] = round(now - clock[0], 2)
        clock[0] = now

    lap("imports, setup, warm-up")
    # 1. truncations of the weights: every header boundary, then spread over the data
    size = len(good_weights)
    cuts = sorted({0, 1, 7, 8, 9, 8 + header_len // 2, 8 + header_len - 1, 8 + header_len, 8 + header_len + 1,
                   *range(8 + header_len, size, max(1, (size - header_len) // 40)), size - 1})
    for cut in cuts:
        run(f"truncate@{cut}", weights=good_weights[:cut])
    lap("truncations")

    # 2. bit flips: header (length prefix + JSON) and data, drawn by hypothesis
    def flip(pos: int, bit: int) -> bytes:
        b = bytearray(good_weights)
        b[pos] ^= 1 << bit
        return bytes(b)

    quick = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))

    @settings(quick, max_examples=150)
    @given(st.integers(0, 8 + header_len - 1), st.integers(0, 7))
    def header_flips(pos: int, bit: int) -> None:
        run(f"flip header byte {pos} bit {bit}", weights=flip(pos, bit))

    @settings(quick, max_examples=40)
    @given(st.integers(8 + header_len, size - 1), st.integers(0, 7))
    def data_flips(pos: int, bit: int) -> None:
        run(f"flip data byte {pos} bit {bit}", weights=flip(pos, bit))

    header_flips()
    data_flips()
    lap("bit flips")

    # 3. every spec field: wrong type, zero, negative, huge, missing; an extra field in every object
    def leaves(obj, path=()):
        if isinstance(obj, dict):
            yield path, obj
            for k, v in obj.items():
                if path[:1] == ("structure",) and len(path) == 2 and k != next(iter(obj)):
                    continue  # one module per structure section is enough
                yield from leaves(v, path + (k,))
        elif isinstance(obj, list):
            yield path, obj
            for i, v in enumerate(obj[:2]):
                yield from leaves(v, path + (i,))
        else:
            yield path, obj

    def with_value(path, value, delete=False):
        doc = copy.deepcopy(good_spec)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        return json.dumps(doc, allow_nan=True)

    bad_values = ["x", None, True, 0, -1, 1.5, 10**12, float("nan"), [1], {}]  # types, zero, negative, huge
    paths = [p for p, _ in leaves(good_spec) if p]
    for path in paths:
        for value in bad_values:
            run(f"spec {'.'.join(map(str, path))} = {value!r}", with_value(path, value))
        if not isinstance(path[-1], int):
            run(f"spec {'.'.join(map(str, path))} missing", with_value(path, None, delete=True))
    for path, obj in leaves(good_spec):
        if isinstance(obj, dict):
            run(f"spec {'.'.join(map(str, path)) or '<top>'} + extra", with_value(path + ("zz_extra",), 1))
    lap("spec fields")

    # 4. sparse-index corruptions
    def with_index(index_text: str, meta_extra: dict | None = None) -> bytes:
        meta = {**st_meta, INDEX_KEY: index_text, **(meta_extra or {})}
        save_file(st_tensors, str(work / "tmp.safetensors"), metadata=meta)
        return (work / "tmp.safetensors").read_bytes()

    entry_name = next(iter(good_index["sparse"]))
    idx_values = ["x", None, 0, -1, 10**15, [], [10**9, 10**9], {}, "float32", "uint8", "nope", True]
    for field in ("shape", "dtype", "mask", "values", "nnz", "negzero"):
        for value in idx_values:
            idx = copy.deepcopy(good_index)
            idx["sparse"][entry_name][field] = value
            run(f"index {entry_name}.{field} = {value!r}", weights=with_index(json.dumps(idx)))
        idx = copy.deepcopy(good_index)
        idx["sparse"][entry_name].pop(field, None)
        run(f"index {entry_name}.{field} missing", weights=with_index(json.dumps(idx)))
    for top in ("order", "sparse"):
        for value in idx_values:
            idx = copy.deepcopy(good_index)
            idx[top] = value
            run(f"index {top} = {value!r}", weights=with_index(json.dumps(idx)))
    for text in ("", "{", "[]", "null", "[" * 10_000 + "]" * 10_000, json.dumps({"order": ["a"] * 3, "sparse": {}})):
        run(f"index text {text[:20]!r}", weights=with_index(text))
    run("index format", weights=with_index(json.dumps(good_index), {"accelvit_sparse_format": "bitmask-v9"}))
    lap("sparse index")

    # 5. hypothesis: arbitrary JSON in arbitrary spec fields
    json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                        max_size=4), max_leaves=10)

    @settings(quick, max_examples=100)
    @given(st.sampled_from(paths), json_values)
    def random_fields(path, value) -> None:
        run(f"random {'.'.join(map(str, path))} = {value!r}"[:200], with_value(path, value))

    random_fields()
    lap("random fields")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cases": state["cases"], "outcomes": outcomes, "failures": failures,
            "warm_rss_mb": warm_rss, "peak_rss_mb": peak, "cpu_s": timings}


if __name__ == "__main__":  # pragma: no cover
    import logging

    logging.disable(logging.WARNING)
    result = _worker(Path(sys.argv[1]))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
