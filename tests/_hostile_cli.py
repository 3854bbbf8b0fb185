"""Small fixtures shared by tests/test_hostile_{dataloss,silent,flags}.py.

Stores are written with `StoreWriter` directly (no model), results with
`sj.fit`, and the command line is run in-process through `cli.main`, so each
case is a fraction of a second; nothing here needs a real model.
"""

from __future__ import annotations

import numpy as np

from snmf_jax.activations import StoreWriter

N, D, ROWS = 48, 8, 16


def write_store(path, *, seed: int = 0, layers=(3,), site: str = "mlp_hidden",
                dtype: str = "float32", x=None):
    """A complete store of N rows x D at `path` (one document, no model)."""
    rng = np.random.default_rng(seed)
    xs = {l: (rng.standard_normal((N, D)).astype(np.float32) if x is None else x)
          for l in layers}
    w = StoreWriter(path, layers=tuple(layers), d=D, chunk_rows=ROWS, n_rows=N,
                    settings={"seed": seed}, info={"model": "none", "site": site},
                    documents={"texts": ["a b c"], "labels": None, "label_names": None},
                    provenance={"doc_ids": ("int32", ()), "positions": ("int32", ()),
                                "token_ids": ("int32", ()), "offsets": ("int32", (2,))},
                    dtype=dtype)
    prov = {"doc_ids": np.zeros(N, np.int32), "positions": np.arange(N, dtype=np.int32) % 3,
            "token_ids": np.zeros(N, np.int32), "offsets": np.zeros((N, 2), np.int32)}
    for i in range(0, N, ROWS):
        w.append({l: xs[l][i:i + ROWS] for l in layers},
                 {k: v[i:i + ROWS] for k, v in prov.items()})
    return w.finish()


def run_out(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `snmf-jax argv...` run in this process."""
    from snmf_jax.cli.main import main
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    got = capsys.readouterr()
    return rc, got.out, got.err


def run(capsys, *argv) -> tuple[int, str]:
    """(exit status, stderr) of `snmf-jax argv...` run in this process."""
    rc, _, err = run_out(capsys, *argv)
    return rc, err


def one_line_error(rc: int, err: str, *needles: str) -> bool:
    """The command failed with one line (no traceback) holding every needle."""
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return (rc not in (0, None) and len(lines) == 1 and "Traceback" not in err
            and all(n in lines[0] for n in needles))
