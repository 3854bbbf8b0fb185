"""Dataset readers: concept JSON (both shapes), JSONL, plain text, lists."""

import json

import pytest

from snmf_jax.activations import TextDataset, from_texts, load_dataset
from snmf_jax.activations._readers import read_concept_json, read_jsonl, read_text


def test_from_texts_string_and_int_labels():
    ds = from_texts(["a", "b", "c"], ["x", "y", "x"])
    assert ds.labels == (0, 1, 0) and ds.label_names == ("x", "y")
    assert ds.label_of(2) == "x" and ds.labelled and len(ds) == 3
    ds2 = from_texts(["a", "b"], [1, 0], label_names=["p", "q"])
    assert ds2.label_of(0) == "q"
    assert from_texts(["a"]).labels is None and from_texts(["a"]).label_of(0) is None
    with pytest.raises(ValueError, match="integer labels need label_names"):
        from_texts(["a"], [0])
    with pytest.raises(ValueError, match="labels has 1 entries; expected one per text"):
        from_texts(["a", "b"], ["x"])
    with pytest.raises(ValueError, match=r"label 'z' is not in label_names \['x'\]"):
        from_texts(["a"], ["z"], label_names=["x"])
    with pytest.raises(TypeError, match="not a single str; wrap it in a list"):
        from_texts("just one string")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str; got int"):
        TextDataset(("a", 3))


def test_fingerprint_tracks_texts_and_labels_not_metadata():
    a = from_texts(["one", "two"], ["x", "y"], metadata={"source": "a"})
    b = from_texts(["one", "two"], ["x", "y"], metadata={"source": "b"})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != from_texts(["one", "two!"], ["x", "y"]).fingerprint()
    assert a.fingerprint() != from_texts(["one", "two"], ["y", "x"]).fingerprint()
    assert a.fingerprint() != from_texts(["one", "two"]).fingerprint()
    # concatenation ambiguity: ["ab", "c"] vs ["a", "bc"]
    assert from_texts(["ab", "c"]).fingerprint() != from_texts(["a", "bc"]).fingerprint()


def test_concept_json_records_and_dict(tmp_path):
    recs = [{"prompt": "The cat sat.", "label": " animals"},
            {"prompt": "Red and blue.", "label": "colours"},
            {"prompt": "A dog ran.", "label": " animals"}]
    (tmp_path / "r.json").write_text(json.dumps(recs))
    ds = read_concept_json(tmp_path / "r.json")
    assert ds.texts == ("The cat sat.", "Red and blue.", "A dog ran.")
    assert ds.label_names == (" animals", "colours") and ds.labels == (0, 1, 0)
    assert ds.metadata["format"] == "concept-json-records"

    (tmp_path / "d.json").write_text(json.dumps({"b": ["x1", "x2"], "a": ["y1"]}))
    ds = read_concept_json(tmp_path / "d.json")
    assert ds.texts == ("x1", "x2", "y1") and ds.label_names == ("b", "a")
    assert ds.labels == (0, 0, 1)

    (tmp_path / "t.json").write_text(json.dumps([{"sentence": "s", "cls": "c"}]))
    ds = read_concept_json(tmp_path / "t.json", label_field="cls")
    assert ds.texts == ("s",) and ds.label_names == ("c",)


@pytest.mark.parametrize("content, message", [
    ([{"prompt": "a"}], r"record 0 has no label field 'label'; keys: \['prompt'\]"),
    ([{"label": "a"}], "record 0 has no text field"),
    ([{"prompt": 3, "label": "a"}], "record 0 field 'prompt' is a int, expected a string"),
    (["just a string"], "record 0 is a str; expected an object"),
    ({"a": "not a list"}, "label 'a' maps to a str"),
    ({"a": ["ok", 5]}, "label 'a' sentence 1 is a int"),
    (42, "expected a JSON list of records or a dict"),
    ([], "no documents found"),
])
def test_concept_json_errors(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_concept_json(f)


def test_paper_concept_files(shared_dir):
    paper = shared_dir / "data" / "paper"
    ds = load_dataset(paper / "final_dataset_20_concepts.json")
    assert len(ds) == 200 and len(ds.label_names) == 20
    raw = json.loads((paper / "final_dataset_20_concepts.json").read_text())
    assert ds.texts[7] == raw[7]["prompt"] and ds.label_of(7) == raw[7]["label"]
    for name in ("hier_concepts.json", "languages.json"):
        raw = json.loads((paper / name).read_text())
        ds = load_dataset(paper / name)
        assert ds.label_names == tuple(raw)
        assert len(ds) == sum(len(v) for v in raw.values())
        first = next(iter(raw))
        assert ds.texts[:len(raw[first])] == tuple(raw[first])


def test_jsonl(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"body": "first doc", "tag": 1}\n\n{"body": "second", "tag": "b"}\n')
    ds = read_jsonl(f, text_field="body")
    assert ds.texts == ("first doc", "second") and ds.labels is None
    ds = read_jsonl(f, text_field="body", label_field="tag")
    assert ds.label_names == ("1", "b")
    with pytest.raises(ValueError, match=r"x.jsonl:1: expected an object with text field "
                                         r"'text'; got \['body', 'tag'\]"):
        read_jsonl(f)
    f.write_text('{"text": "ok"}\n{"text": "ok", oops}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        read_jsonl(f)


def test_plain_text_lines_and_paragraphs(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("\ufeffFirst line.\n  Second line.  \n\n\nThird\nstill third.\n")
    assert read_text(f).texts == ("First line.", "Second line.", "Third", "still third.")
    assert read_text(f, split="paragraphs").texts == (
        "First line.\nSecond line.", "Third\nstill third.")
    with pytest.raises(ValueError, match="split must be 'lines' or 'paragraphs'; got 'words'"):
        read_text(f, split="words")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty.txt: no documents found \(the dataset is empty\)"):
        read_text(tmp_path / "empty.txt")


@pytest.mark.parametrize("reader", [read_text, read_jsonl, read_concept_json])
def test_non_utf8_names_file_and_byte_offset(tmp_path, reader):
    f = tmp_path / "latin1.txt"
    f.write_bytes("ok line\ncaf".encode() + "é".encode("latin-1") + b" au lait\n")
    with pytest.raises(ValueError, match=r"latin1.txt: not valid UTF-8 at byte offset 11 "
                                         r"\(line 2\)"):
        reader(f)


def test_read_dataset_dispatch(tmp_path):
    ds = from_texts(["a"])
    assert load_dataset(ds) is ds
    assert load_dataset(["x", "y"]).texts == ("x", "y")
    assert load_dataset("concepts").label_names[0] == "cooking"
    (tmp_path / "c.json").write_text(json.dumps({"k": ["s1"]}))
    (tmp_path / "c.jsonl").write_text('{"text": "j"}\n')
    (tmp_path / "c.md").write_text("p1\n\np2 a\np2 b\n")
    assert load_dataset(tmp_path / "c.json").label_names == ("k",)
    assert load_dataset(str(tmp_path / "c.jsonl")).texts == ("j",)
    assert load_dataset(tmp_path / "c.md", split="paragraphs").texts == ("p1", "p2 a\np2 b")
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a known dataset"):
        load_dataset(tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="got int"):
        load_dataset(5)
