"""Results page downloads: the model folder as a zip, and its ONNX export (made on request, verified)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import streamlit as st

from ..card import read_export
from ..errors import AccelvitError
from ..layout import CARD_FILE, ONNX_FILE, SPEC_FILE, WEIGHTS_FILE


def zip_folder(path: str | Path) -> bytes:
    """The folder as a zip under its own name: regular files inside it only (links are left out, so a link
    placed in the folder cannot pull in a file from elsewhere)."""
    root = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):  # linked folders are not entered
            dirnames.sort()
            for name in sorted(filenames):
                f = Path(dirpath) / name
                if f.is_file() and not f.is_symlink():
                    zf.write(f, f"{root.name}/{f.relative_to(root)}")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=8)
def _zip(path: str, mtime: float, files: tuple[str, ...]) -> bytes:
    return zip_folder(path)


def onnx_available() -> str | None:
    """None when the ONNX extra is installed, else the message saying what to install."""
    from ..export import ExportError, require_onnx

    try:
        require_onnx()
    except ExportError as exc:
        return str(exc)
    return None


def model_downloads(col_zip, col_onnx, model_dir: str | None, run_id: str) -> None:
    """The zip button, and the ONNX button (export + verify first when the folder has no current export)."""
    from ..export import export_folder

    if not model_dir or not Path(model_dir).is_dir():
        col_zip.caption("No saved pruned model for this run.")
        return
    folder = Path(model_dir)
    files = tuple(sorted(p.name for p in folder.iterdir()))
    exported = read_export(folder)
    col_zip.download_button(
        "Pruned model (zip)", _zip(str(folder), folder.stat().st_mtime, files), file_name=f"{run_id}_model.zip",
        mime="application/zip", icon=":material/deployed_code:", key="dl_model",
        help=f"{WEIGHTS_FILE} + {SPEC_FILE} + {CARD_FILE} (the model card)"
             + (f" + {ONNX_FILE}" if exported else "") + "; load with accelvit.load(folder).")
    if exported:
        col_onnx.download_button(f"{ONNX_FILE} ({exported['file_bytes'] / 1e6:.2f} MB)",
                                 (folder / ONNX_FILE).read_bytes(), file_name=f"{run_id}_{ONNX_FILE}",
                                 mime="application/octet-stream", icon=":material/output:", key="dl_onnx")
        col_onnx.caption(f"Verified: onnxruntime equals PyTorch within {exported['max_abs_diff']:.1e} on "
                         f"{exported['verify_inputs']}. IHT zeros are dense in ONNX.")
        return
    missing = onnx_available()
    if col_onnx.button("Export ONNX", key="onnx_export", icon=":material/output:", disabled=missing is not None,
                       help=missing or "Writes model.onnx into the model folder and checks it in onnxruntime against "
                                       "PyTorch on real test images (takes a few seconds to a minute)."):
        with col_onnx, st.spinner("Exporting and checking in onnxruntime…"):
            try:
                export_folder(folder)
            except AccelvitError as exc:
                col_onnx.error(str(exc), icon=":material/error:")
                return
        st.rerun()
