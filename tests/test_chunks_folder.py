"""Removing a chunked folder deletes only files the package writes."""

import pytest

from snmf_jax import _chunks


def _folder(tmp_path, *names):
    d = tmp_path / "codes"
    d.mkdir()
    for n in names:
        (d / n).write_bytes(b"x")
    return d


def test_our_files_and_their_temp_files_are_removed(tmp_path):
    d = _folder(tmp_path, "manifest.json", "chunk-000000.safetensors",
                ".chunk-000001.safetensors.ab12.tmp", ".manifest.json.zz.tmp")
    _chunks.remove_chunk_folder(d)
    assert not d.exists()


@pytest.mark.parametrize("stray", [".notes.tmp", "notes.txt", "manifest.json.bak"])
def test_a_user_file_is_refused_not_deleted(tmp_path, stray):
    d = _folder(tmp_path, "manifest.json", "chunk-000000.safetensors", stray)
    with pytest.raises(ValueError, match=f"holds '{stray}'"):
        _chunks.remove_chunk_folder(d)
    assert (d / stray).exists() and (d / "manifest.json").exists()
