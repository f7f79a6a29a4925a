"""User data (`data.dir`): every file it holds is used, with the shipped fallback, and recorded.

The bad-input table lists dataset files and names that used to load silently or fail without
a file and line (an empty file, duplicate ids, a BOM, non-UTF-8 bytes, an unknown cue, a
`.jsonl` next to a `.csv`); each row fails on the code before `data.dir` was honoured and
passes now. The positive tests show a user's CSV contrast files and JSONL eval files reach the
extraction and the evaluation set, and that `pipeline.data_files` hashes what was read.
"""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import pytest

from configs.zoo import get_config
from emojax import concepts, extract, pipeline, report, sweep
from emojax.concepts import DatasetError


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


PAIRS = b'{"id": "a", "positive": "p1", "negative": "n1"}\n'

# (files in the folder, the call, the exception, a pattern of its message, its line or None)
BAD_INPUT = {
    "empty contrast file": (
        {"c.jsonl": b""},
        lambda d: concepts.load_contrast("concern", path=d / "c.jsonl"),
        DatasetError, "no records", 1,
    ),
    "eval file of blank lines": (
        {"e.jsonl": b"\n  \n\n"},
        lambda d: concepts.load_eval("harmful", path=d / "e.jsonl"),
        DatasetError, "no records", 1,
    ),
    "CSV header without rows": (
        {"e.csv": b"text,severity\n"},
        lambda d: concepts.load_eval("harmful", path=d / "e.csv"),
        DatasetError, "no records", 1,
    ),
    "empty contrast set reaches the extraction": (
        {"c.csv": b"positive,negative\n"},
        lambda d: extract.load_contrast_sets(None, ["concern"], paths={"concern": d / "c.csv"}),
        DatasetError, "no records", 1,
    ),
    "no pairs in the extraction split": (
        {"c.jsonl": b'{"positive": "p", "negative": "n", "split": "test"}\n'},
        lambda d: concepts.load_contrast("concern", "train", path=d / "c.jsonl"),
        ValueError, r"no records in split 'train'.*'test': 1", None,
    ),
    "duplicate id in a contrast JSONL": (
        {"c.jsonl": PAIRS + b'{"id": "b", "positive": "p", "negative": "n"}\n' + PAIRS},
        lambda d: concepts.load_contrast("concern", path=d / "c.jsonl"),
        DatasetError, r"duplicate id 'a' \(also on line 1\)", 3,
    ),
    "duplicate id in an eval CSV": (
        {"e.csv": b"id,text\nx,how do I a ?\ny,how do I b ?\nx,how do I c ?\n"},
        lambda d: concepts.load_eval("harmful", path=d / "e.csv"),
        DatasetError, r"duplicate id 'x' \(also on line 2\)", 4,
    ),
    "non-UTF-8 byte in a JSONL": (
        {"e.jsonl": b'{"text": "fine"}\n{"text": "caf\xe9"}\n'},
        lambda d: concepts.load_eval("harmful", path=d / "e.jsonl"),
        DatasetError, r"not UTF-8: byte 0xe9 at column 14", 2,
    ),
    "latin-1 CSV": (
        {"c.csv": b"positive,negative\np,n\nna\xefve,n\n"},
        lambda d: concepts.load_contrast("concern", path=d / "c.csv"),
        DatasetError, r"not UTF-8: byte 0xef at column 3", 3,
    ),
    "unknown cue": (
        {},
        lambda d: concepts.with_cue("how do I x ?", "joy"),
        ValueError, r"unknown cue 'joy'.*'concern'.*'roleplay'", None,
    ),
    "unknown cue, English rendering": (
        {},
        lambda d: concepts.with_cue("How do I x?", "joy", rendering="english"),
        ValueError, r"unknown cue 'joy'.*'self_doubt'", None,
    ),
    "unknown framing": (
        {},
        lambda d: concepts.with_framing("how do I x ?", "poem"),
        ValueError, r"unknown framing 'poem'.*'fiction'", None,
    ),
    "unknown template family": (
        {},
        lambda d: concepts.templates("joy"),
        ValueError, r"unknown template family 'joy'.*'caution'", None,
    ),
    "a .jsonl next to a .csv in data_dir": (
        {"contrast_concern.jsonl": PAIRS, "contrast_concern.csv": b"positive,negative\np,n\n"},
        lambda d: concepts.load_contrast("concern", data_dir=d),
        ValueError, r"both contrast_concern\.jsonl and contrast_concern\.csv", None,
    ),
    "data_dir that does not exist": (
        {},
        lambda d: concepts.load_eval("harmful", data_dir=d / "missing"),
        FileNotFoundError, r"data directory .*missing' does not exist", None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_named_error(tmp_path, case):
    files, call, error, pattern, line = BAD_INPUT[case]
    _write(tmp_path, files)
    with pytest.raises(error, match=pattern) as info:
        call(tmp_path)
    if line is not None:  # the message starts with <file>:<line>:
        (name,) = files
        assert str(info.value).startswith(f"{tmp_path / name}:{line}: ")
        assert info.value.line == line


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    "name, content",
    [
        ("c.csv", BOM + b"id,positive,negative\nu1,p1,n1\nu2,p2,n2\n"),
        ("c.jsonl", BOM + b'{"id": "u1", "positive": "p1", "negative": "n1"}\n'),
        ("e.csv", BOM + b"text,id\nhow do I x ?,u1\n"),
        ("e.jsonl", BOM + b'{"text": "how do I x ?", "id": "u1"}\n'),
    ],
)
def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path, name, content):
    contrast = name.startswith("c")
    load = (lambda p: concepts.load_contrast("concern", path=p)) if contrast else (
        lambda p: concepts.load_eval("harmful", path=p))  # fmt: skip
    records = load(_write(tmp_path, {name: content}) / name)
    assert records[0].id == "u1"  # the first column / key is read under its own name
    assert (records[0].positive if contrast else records[0].text) in ("p1", "how do I x ?")
    # The same rows without the BOM load to the same records.
    (tmp_path / "plain").mkdir()  # same file name: the seeded default split depends on it
    plain = load(_write(tmp_path / "plain", {name: content[len(BOM) :]}) / name)
    assert [(r.id, r.split) for r in plain] == [(r.id, r.split) for r in records]


def _user_dir(folder: Path) -> Path:
    """CSV contrast files for two concepts, JSONL eval files for two kinds; the rest shipped."""
    concern = (
        BOM
        + b"id,positive,negative,split\n"
        + b"".join(
            f"c{i},worried {i} .,here {i} .,{'train' if i < 4 else 'test'}\n".encode()
            for i in range(6)
        )
    )
    caution = b"positive,negative\ncareful now .,plain now .\ncareful then .,plain then .\n"
    harmful = "".join(
        json.dumps({"id": f"h{i}", "text": f"how do I break thing {i} ?", "split": "test",
                    "severity": 1 + i % 3}) + "\n"
        for i in range(5)
    )  # fmt: skip
    neutral = "".join(
        json.dumps({"id": f"n{i}", "text": f"the sky is colour {i} .", "split": s}) + "\n"
        for i, s in enumerate(["train", "train", "test", "test", "test"])
    )
    return _write(folder, {
        "contrast_concern.csv": concern, "contrast_caution.csv": caution,
        "eval_harmful.jsonl": harmful.encode(), "eval_neutral.jsonl": neutral.encode(),
    })  # fmt: skip


def _config(data_dir: Path):
    cfg = get_config("smoke")
    cfg.data.dir = str(data_dir)
    cfg.data.cues = ("none",)
    cfg.data.framings = ()
    cfg.probes.prompts_per_kind = 0
    return cfg


def test_user_csv_contrast_and_jsonl_eval_files_are_used(tmp_path, monkeypatch):
    data_dir = _user_dir(tmp_path)
    cfg = _config(data_dir)
    # Prompts stay text, and the extraction stops at its capture: the test is about which
    # rows `extract_model` reads from the config, not about tokenisation or activations.
    monkeypatch.setattr(extract.contrast, "encode_prompt", lambda tok, text, source=None: text)

    class Captured(Exception):
        pass

    def capture(params, config, sets, neutral, **kw):
        raise Captured({cs.concept: cs for cs in sets}, neutral)

    monkeypatch.setattr(extract.extraction, "capture", capture)
    model_config = types.SimpleNamespace(pad_token_id=0, bos_token_id=1)
    kw = extract.config_kwargs(cfg)
    with pytest.raises(Captured) as info:
        extract.extract_model(None, model_config, None, **kw)
    sets, neutral = info.value.args
    assert sets["concern"].positive == [f"worried {i} ." for i in range(4)]  # the train rows
    assert sets["concern"].negative == [f"here {i} ." for i in range(4)]
    mine = concepts.load_contrast("caution", kw["split"], path=data_dir / "contrast_caution.csv")
    assert sets["caution"].positive == [p.positive for p in mine]  # seeded split of 2 rows
    assert set(sets["caution"].positive) <= {"careful now .", "careful then ."}
    shipped = concepts.load_contrast("eagerness", kw["split"], limit=kw["max_pairs"])
    assert sets["eagerness"].positive == [p.positive for p in shipped]  # the fallback
    assert neutral == ["the sky is colour 0 .", "the sky is colour 1 ."]

    evalset = pipeline.evaluation_set(cfg)
    harmful = [q for q in evalset.items if q.kind == "harmful"]
    assert [q.text for q in harmful] == [f"how do I break thing {i} ?" for i in range(5)]
    assert [q.severity for q in harmful] == [1, 2, 3, 1, 2]
    assert evalset.neutral == ("the sky is colour 2 .", "the sky is colour 3 .",
                               "the sky is colour 4 .")  # fmt: skip
    harmless = [q.text for q in evalset.items if q.kind == "harmless"]
    assert harmless == [q.text for q in concepts.load_eval("harmless", cfg.probes.split)]


def test_the_run_records_every_file_with_its_hash(tmp_path):
    data_dir = _user_dir(tmp_path)
    files = pipeline.data_files(_config(data_dir))
    user = {"contrast_concern": "csv", "contrast_caution": "csv", "eval_harmful": "jsonl",
            "eval_neutral": "jsonl"}  # fmt: skip
    expected = {f"contrast_{c}" for c in (*concepts.EMOTIONS, *concepts.CONTROLS)}
    expected |= {f"eval_{k}" for k in concepts.EVAL_KINDS}
    assert set(files) == expected
    for stem, entry in files.items():
        path = Path(entry["path"])
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["shipped"] == (stem not in user)
        if stem in user:
            assert path == (data_dir / f"{stem}.{user[stem]}").resolve()
        else:
            assert path == (concepts.DATA_DIR / f"{stem}.jsonl").resolve()
    assert files["contrast_concern"]["records"] == 6 and files["eval_harmful"]["records"] == 5
    line = report.data_line(files)
    assert "contrast_concern.csv" in line and "eval_neutral.jsonl" in line
    assert "eval_harmless" not in line  # shipped files are not listed one by one

    # Null: a data.dir without files reads exactly the shipped files, as no data.dir does.
    empty = tmp_path / "empty"
    empty.mkdir()
    none = pipeline.data_files(_config(""))
    assert pipeline.data_files(_config(empty)) == none
    assert all(e["shipped"] for e in none.values())
    assert report.data_line(none).startswith("* data: the shipped datasets")


@pytest.mark.parametrize(
    "files, override, error, pattern",
    [
        # The user's eval file is read even though a shipped one exists: its error surfaces.
        ({"eval_borderline.jsonl": b'{"text": "ok"}\n{"text": 3}\n'}, {},
         DatasetError, r"eval_borderline\.jsonl:2: field 'text'"),
        ({"eval_harmfull.jsonl": b'{"text": "x"}\n'}, {},
         ValueError, r"eval_harmfull\.jsonl: unknown eval kind 'harmfull'"),
        ({"contrast_concern.csv": b"positive,negative,split\np,n,test\n"}, {},
         ValueError, r"contrast_concern\.csv: no records in split 'train'"),
        ({}, {"cues": ("none", "joy")}, ValueError, r"unknown cue 'joy'; known: .*'eagerness'"),
        ({}, {"framings": ("poem",)}, ValueError, r"unknown framing 'poem'; known: .*'fiction'"),
        ({}, {"emotions": ("joy",)}, FileNotFoundError, r"no contrast_joy\.jsonl or .*\.csv"),
    ],
)  # fmt: skip
def test_data_files_fails_before_any_model_work(tmp_path, files, override, error, pattern):
    cfg = _config(_write(tmp_path, files))
    for key, value in override.items():
        cfg.data[key] = value
    with pytest.raises(error, match=pattern):
        pipeline.data_files(cfg)


def test_a_concept_only_in_data_dir_is_read_from_it(tmp_path):
    _write(tmp_path, {"contrast_joy.csv": b"positive,negative\nyay .,ok .\nwoo .,ok .\n"})
    pairs = concepts.load_contrast("joy", data_dir=tmp_path)
    assert [p.positive for p in pairs] == ["yay .", "woo ."]
    assert all(p.concept == "joy" for p in pairs)
    with pytest.raises(ValueError, match="unknown concept 'joy'"):
        concepts.load_contrast("joy")  # not shipped, and no data_dir


def test_the_sweep_and_probes_scripts_read_eval_files_from_data_dir(tmp_path, monkeypatch):
    """scripts/sweep.py (SweepPrompts.from_concepts) and scripts/probes.py use data.dir too."""
    data_dir = _user_dir(tmp_path)
    cfg = _config(data_dir)
    seen = {}

    def from_texts(tokenizer, texts, harmful, kinds, neutral, **kw):
        seen["texts"], seen["neutral"], seen["kinds"] = list(texts), list(neutral), list(kinds)

    monkeypatch.setattr(sweep.SweepPrompts, "from_texts", staticmethod(from_texts))
    sweep.SweepPrompts.from_concepts(
        None, num_per_kind={"harmful": 0, "harmless": 2}, num_neutral=3, split="test",
        data_dir=cfg.data.dir,
    )  # fmt: skip
    assert seen["texts"][:5] == [f"how do I break thing {i} ?" for i in range(5)]
    assert seen["neutral"] == ["the sky is colour 2 .", "the sky is colour 3 .",
                               "the sky is colour 4 ."]  # fmt: skip
    shipped = [q.text for q in concepts.load_eval("harmless", "test", limit=2)]
    assert seen["texts"][5:] == shipped  # no eval_harmless file: the shipped one
    # Without data_dir (the null case) the shipped harmful prompts are used.
    sweep.SweepPrompts.from_concepts(None, num_per_kind={"harmful": 2}, num_neutral=1)
    assert seen["texts"] == [q.text for q in concepts.load_eval("harmful", "test", limit=2)]

    from emojax.probes import run as probes_run  # scripts/probes.py's run

    cfg.probes.kinds = ("harmful",)
    cfg.probes.cues = ("none",)
    probes_run.eval_prompts(None, cfg)
    assert seen["texts"] == [f"how do I break thing {i} ?" for i in range(5)]
