"""``notebooks/quickstart.ipynb`` runs from top to bottom (nbclient) and shows what it promises: training metrics,
a prediction on a real video and a rendered 3D face."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.fixtures]


def test_quickstart_notebook_runs(project_root: Path, fixtures_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FACEFORGE_QUICKSTART_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FACEFORGE_FIXTURES", str(fixtures_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(project_root),
                                                                  os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(project_root / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(project_root / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "val/auc" in text  # the metrics
    assert "video: P(fake) =" in text and "per frame:" in text  # the prediction
    assert "vertices" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the rendered face is shown inline"
    assert (tmp_path / "out" / "faces" / "image00050.glb").is_file()
