"""Hostile inputs, class "data loss": no command replaces or deletes what it
did not write, unless the user says --overwrite.

One policy (`snmf_jax._outputs.check_outputs`) for every command that
writes: an existing output is refused without --overwrite (before any work);
no output is one of the command's inputs, inside one, or the same path as
another output; overwriting deletes only files the store can prove it wrote.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

import snmf_jax as sj
from _hostile_cli import run, one_line_error, write_store


@pytest.fixture
def fitted(tmp_path, capsys):
    """A store and the result of `snmf-jax fit` on it."""
    store = tmp_path / "acts"
    write_store(store)
    out = tmp_path / "res"
    rc, err = run(capsys, "fit", store, "--rank", 3, "--max-iter", 5, "--out", out,
                  "--no-progress")
    assert rc == 0, err
    return store, out


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_fit_out_on_an_existing_result_is_refused_without_overwrite(fitted, capsys):
    store, out = fitted
    before = _bytes(out)
    rc, err = run(capsys, "fit", store, "--rank", 2, "--max-iter", 5, "--out", out,
                  "--no-progress")
    assert one_line_error(rc, err, "--overwrite", "snmf.safetensors")
    assert _bytes(out) == before
    rc, err = run(capsys, "fit", store, "--rank", 2, "--max-iter", 5, "--out", out,
                  "--no-progress", "--overwrite")
    assert rc == 0, err
    assert sj.SNMFResult.load(out).rank == 2


@pytest.mark.parametrize("where", ["same", "inside"])
def test_fit_never_writes_into_its_input(tmp_path, capsys, where):
    store = tmp_path / "acts"
    write_store(store)
    out = store if where == "same" else store / "res"
    before = _bytes(store)
    rc, err = run(capsys, "fit", store, "--rank", 2, "--out", out, "--no-progress")
    assert one_line_error(rc, err, "--out", "INPUT")
    assert _bytes(store) == before and not (store / "res").exists()


def test_fit_out_through_a_symlink_to_its_input_is_refused(tmp_path, capsys):
    store = tmp_path / "acts"
    write_store(store)
    (tmp_path / "link").symlink_to(store)
    rc, err = run(capsys, "fit", store, "--rank", 2, "--out", tmp_path / "link",
                  "--no-progress", "--overwrite")
    assert one_line_error(rc, err, "INPUT")
    assert not (store / "snmf.json").exists()


def test_hierarchy_out_on_an_existing_hierarchy_is_refused(fitted, tmp_path, capsys):
    store, res = fitted
    out = tmp_path / "h"
    out.mkdir()
    (out / "tree.json").write_text("my tree")
    rc, err = run(capsys, "hierarchy", res, "--ranks", 2, "--store", store, "--out", out,
                  "--no-progress", "--restarts", 1)
    assert one_line_error(rc, err, "--overwrite", "tree.json")
    assert (out / "tree.json").read_text() == "my tree"


def test_hierarchy_out_inside_its_store_is_refused(fitted, capsys):
    store, res = fitted
    rc, err = run(capsys, "hierarchy", res, "--ranks", 2, "--store", store,
                  "--out", store / "h", "--no-progress")
    assert one_line_error(rc, err, "--out", "--store")


def test_interpret_out_on_an_existing_page_is_refused_before_any_work(fitted, tmp_path,
                                                                      capsys):
    store, res = fitted
    page = tmp_path / "index.html"
    page.write_text("<p>my page</p>")
    rc, err = run(capsys, "interpret", "--features", res, "--activations", store,
                  "--out", page, "--model", "none")
    assert one_line_error(rc, err, "--overwrite")
    assert page.read_text() == "<p>my page</p>"


def test_interpret_neuronpedia_and_out_on_one_path_is_refused(fitted, tmp_path, capsys):
    store, res = fitted
    target = tmp_path / "page.html"
    rc, err = run(capsys, "interpret", "--features", res, "--activations", store,
                  "--out", target, "--neuronpedia", target, "--model", "none")
    assert one_line_error(rc, err, "--neuronpedia", "--out")
    assert not target.exists()


@pytest.mark.parametrize("flag", ["--descriptions", "--scores", "--steered", "--tree"])
def test_interpret_out_over_one_of_its_inputs_is_refused(fitted, tmp_path, capsys, flag):
    store, res = fitted
    src = tmp_path / "in.json"
    src.write_text("{}")
    rc, err = run(capsys, "interpret", "--features", res, "--activations", store,
                  "--out", src, flag, src, "--model", "none", "--overwrite")
    assert one_line_error(rc, err, flag)
    assert src.read_text() == "{}"


def test_interpret_plots_folder_with_a_users_plot_is_refused(fitted, tmp_path, capsys):
    store, res = fitted
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "loss.png").write_bytes(b"mine")
    rc, err = run(capsys, "interpret", "--features", res, "--activations", store,
                  "--out", tmp_path / "p.html", "--plots", plots, "--model", "none")
    assert one_line_error(rc, err, "--plots", "--overwrite")
    assert (plots / "loss.png").read_bytes() == b"mine"


@pytest.mark.parametrize("protocol, name", [("per-feature", "per_feature.json"),
                                            ("matching", "results.json")])
def test_evaluate_out_with_results_is_refused_before_the_model_loads(tmp_path, capsys,
                                                                     protocol, name):
    out = tmp_path / "ev"
    out.mkdir()
    (out / name).write_text('{"mine": 1}')
    rc, err = run(capsys, "evaluate", "--model", tmp_path / "no-such-model", "--layer", 0,
                  "--protocol", protocol, "--out", out)
    assert one_line_error(rc, err, "--overwrite", name)
    assert (out / name).read_text() == '{"mine": 1}'


def test_demo_out_with_a_users_files_is_refused_before_the_model_loads(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "features").mkdir(parents=True)
    (out / "index.html").write_text("my page")
    rc, err = run(capsys, "demo", "--model", tmp_path / "no-such-model", "--out", out)
    assert one_line_error(rc, err, "--overwrite")
    assert (out / "index.html").read_text() == "my page"


def test_store_overwrite_never_deletes_a_name_read_from_the_manifest(tmp_path):
    from snmf_jax.activations import StoreWriter
    path = tmp_path / "s"
    write_store(path)
    (path / "notes.txt").write_text("mine")
    m = json.loads((path / "manifest.json").read_text())
    m["chunks"][0]["file"] = "notes.txt"  # a crafted manifest names the user's file
    (path / "manifest.json").write_text(json.dumps(m))
    StoreWriter(path, layers=(3,), d=8, chunk_rows=16, n_rows=48, settings={"x": 1},
                overwrite=True)
    assert (path / "notes.txt").read_text() == "mine"


# The policy itself, over arbitrary layouts: an output is refused exactly
# when it is an input or inside one, and an existing file only without
# --overwrite.
_NAMES = st.sampled_from(["a", "b", "c"])


@given(out=st.lists(_NAMES, min_size=1, max_size=3), inp=st.lists(_NAMES, min_size=1,
                                                                   max_size=3),
       exists=st.booleans(), overwrite=st.booleans())
def test_policy_refuses_exactly_inputs_and_unconfirmed_replacements(tmp_path_factory, out,
                                                                    inp, exists, overwrite):
    from snmf_jax._outputs import Output, check_outputs
    root = tmp_path_factory.mktemp("p")
    o, i = root.joinpath(*out), root.joinpath(*inp)
    i.parent.mkdir(parents=True, exist_ok=True)
    i.write_text("input")
    made = exists and not (o == i or i in o.parents or o in i.parents)
    if made:
        o.mkdir(parents=True, exist_ok=True)
        (o / "r.json").write_text("old")
    clash = o == i or i in o.parents
    try:
        check_outputs([Output("--out", o, ("r.json",))], inputs={"INPUT": i},
                      overwrite=overwrite)
        outcome = "ok"
    except FileExistsError:
        outcome = "exists"
    except ValueError as e:
        outcome = "input" if "INPUT" in str(e) else "other"
    if clash:
        assert outcome in ("input", "other")  # (a file parent is refused as "not a folder")
    elif made and not overwrite:
        assert outcome == "exists"
    else:  # including out = a folder holding the input (the demo's layout)
        assert outcome == "ok"
    assert i.read_text() == "input"
