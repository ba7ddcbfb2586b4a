"""The Results page's downloads: the model zip holds the folder's own regular files and the model card."""

from __future__ import annotations

import io
import os
import zipfile

from accelvit import serialize
from accelvit.models import build_model
from accelvit.ui.downloads import zip_folder


def test_zip_has_the_model_card_and_no_linked_files(tmp_path):
    folder = serialize.save(build_model("swin_pico", 3), tmp_path / "m")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the model folder")
    os.symlink(secret, folder / "link.txt")
    os.symlink(tmp_path, folder / "linked_dir")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("inside")
    names = zipfile.ZipFile(io.BytesIO(zip_folder(folder))).namelist()
    assert sorted(names) == ["m/README.md", "m/accelvit.json", "m/model.safetensors", "m/sub/notes.txt"]
