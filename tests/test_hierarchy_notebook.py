"""notebooks/hierarchical_tutorial.ipynb runs end to end on small settings."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tutorial_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SNMF_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # The kernel is another process: make it import this checkout's snmf_jax.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(ROOT / "notebooks" / "hierarchical_tutorial.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "children linked to their true parent" in text
    assert "greedy" in text and "fine-tuned" in text
    assert "1:0" in text  # the text tree was printed
