"""`--config run.toml`: one TOML table per subcommand, flags override it, and a
bad file is one line naming the file and the key (exit 2)."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from snmf_jax import cli
from snmf_jax.factorize import SNMFResult


@pytest.fixture
def x_file(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"X": np.abs(np.random.default_rng(0).standard_normal((40, 12)))
               .astype(np.float32)}, str(path))
    return path


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_supplies_required_flags_and_positionals(tmp_path, x_file, capsys):
    cfg = write(tmp_path, f'[fit]\ninput = "{x_file}"\nout = "{tmp_path / "a"}"\n'
                          'rank = 3\nmax_iter = 7\npatience = 0\nno_progress = true\n'
                          '[export]\nmodel = "unused here"\nlayers = [1, 2]\n')
    assert cli.main(["--config", cfg, "fit"]) == 0
    res = SNMFResult.load(tmp_path / "a")
    assert res.rank == 3 and res.n_iter == 7
    # The same run from flags gives the same result: the file only sets defaults.
    assert cli.main(["fit", str(x_file), "--out", str(tmp_path / "b"), "--rank", "3",
                     "--max-iter", "7", "--patience", "0", "--no-progress"]) == 0
    np.testing.assert_array_equal(res.features, SNMFResult.load(tmp_path / "b").features)
    capsys.readouterr()


def test_flags_on_the_command_line_override_the_file(tmp_path, x_file, capsys):
    cfg = write(tmp_path, f'[fit]\nout = "{tmp_path / "a"}"\nrank = 3\nmax_iter = 7\n'
                          'patience = 0\nno_progress = true\n')
    # --config after the subcommand works too.
    assert cli.main(["fit", str(x_file), "--config", cfg, "--max-iter", "4",
                     "--out", str(tmp_path / "c")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_iter"] == 4 and out["out"] == str(tmp_path / "c")
    assert not (tmp_path / "a").exists()


BAD = [
    ('[fit]\nrank = "three"\n', "rank must be an integer"),
    ('[fit]\nsparsity = "a lot"\n', "sparsity must be a number"),
    ('[fit]\ninit = "magic"\n', "init must be one of"),
    ('[fit]\nrnak = 3\n', "unknown key 'rnak'"),
    ('[fit]\nrank = 3\n[steer]\nfeatur = 1\n', "[steer]: unknown key 'featur'"),
    ('[fitt]\nrank = 3\n', "unknown section or top-level key 'fitt'"),
    ('rank = 3\n', "unknown section or top-level key 'rank'"),
    ('fit = 3\n', "'fit' must be a table"),
    ('[fit]\nno_progress = "yes"\n', "no_progress must be true or false"),
    ('[fit\nrank = 3\n', "is not valid TOML"),
    ('[export]\nlayers = ["six"]\n', "layers"),
    ('[demo]\nprompt = [{a = 1}]\n', "prompt must be a string"),
]


@pytest.mark.parametrize("text,fragment", BAD)
def test_bad_config_file_is_one_line_naming_the_file_and_key(tmp_path, text, fragment,
                                                              capsys):
    cfg = write(tmp_path, text)
    command = "export" if "export" in text else "demo" if "demo" in text else "fit"
    argv = {"fit": ["fit", "x", "--out", "y"], "export": ["export"], "demo": ["demo"]}[command]
    assert cli.main(["--config", cfg, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"snmf-jax {command}: error: ") and cfg in err[0]
    assert fragment in err[0], err[0]


def test_missing_config_file(tmp_path, capsys):
    assert cli.main(["fit", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.toml" in err[0] and "does not exist" in err[0]


def test_every_subcommand_accepts_a_config_file():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert {"export", "fit", "interpret", "steer", "hierarchy", "demo"} <= set(subs)
    for name, sub in subs.items():
        assert any(a.dest == "sub_config" for a in sub._actions), name


def test_config_value_bad_for_the_command_fails_before_work(tmp_path, capsys):
    cfg = write(tmp_path, "[demo]\nrank = 0\n")
    assert cli.main(["--config", cfg, "demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["snmf-jax demo: error: --rank must be an integer >= 1; got 0"]
