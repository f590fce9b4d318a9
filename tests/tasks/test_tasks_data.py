"""Task data: the shared benchmark copies, gensim's embedded polarity file, and small synthetic
files in the exact published formats (AG News CSV, the IMDB archive) fetched through the real
downloader from file:// URLs, with the same checksum and offline errors as corpora."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lineage.data.sources import DataError, RemoteFile, sha256_file
from lineage.tasks import load_task
from lineage.tasks.base import parse_task_config
from lineage.tasks.data import (
    TASK_SOURCES,
    CsvConfig,
    SplitConfig,
    TaskSource,
    load_ag_news,
    load_csv,
    load_imdb,
    load_sms_spam,
    normalise_stsa,
    read_csv_split,
    stratified_split,
    subsample,
)


def test_polarity_is_gensims_200_sentences():
    data = load_task(
        "polarity", parse_task_config("polarity", {"source": "polarity", "cv_folds": 5})
    )
    assert len(data.texts["all"]) == 200
    assert data.classes == ["neg", "pos"]
    assert sorted(data.labels["all"]).count("neg") == 100
    assert any("—" in t for t in data.texts["all"])  # cp1252 0x97, decoded
    assert len(data.files["all"]["digest"]) == 64
    cut = {"source": "polarity", "cv_folds": 5, "max_train": 50}
    with pytest.raises(DataError) as err:  # no train split: the setting would be ignored
        load_task("polarity", parse_task_config("polarity", cut))
    assert str(err.value) == (
        "task.polarity.max_train=50: the task is cross-validated over all its 200 texts, it has "
        "no train split to cut; leave it unset"
    )


def test_sst2_standard_setting_from_the_shared_copy(shared_data):
    cfg = parse_task_config("sst2", {"source": "sst2", "data_dir": str(shared_data / "sst2")})
    data = load_task("sst2", cfg)
    assert {s: len(t) for s, t in data.texts.items()} == {"train": 67349, "val": 872, "test": 1821}
    assert (data.y("train") == 0).sum() == 29780 and (data.y("val") == 0).sum() == 428
    assert (data.y("test") == 0).sum() == 912
    assert not any(t.endswith(" ") for t in data.texts["train"][:1000])  # GLUE's trailing space
    joined = "\n".join(data.texts["test"])
    assert "-lrb-" not in joined and "\\/" not in joined and "\u00a0" not in joined
    # after normalisation dev sentences read as GLUE's (the manifest's cross-check)
    assert data.files["test"]["uri"].endswith("stsa.binary.test")


def test_stsa_normalisation():
    assert normalise_stsa("a -lrb- b -rrb- 1\\/2 2\u00a01\\/2") == "a ( b ) 1/2 2 1/2"


def test_sms_spam_is_deduplicated_and_split_stratified_with_a_fixed_seed(shared_data):
    split = SplitConfig([0.7, 0.15, 0.15], seed=1234)
    data = load_sms_spam("sms_spam", str(shared_data / "sms_spam"), True, split)
    sizes = {s: len(t) for s, t in data.texts.items()}
    # 5,574 lines, 5,171 distinct texts, 5,160 once whitespace is ignored
    assert sum(sizes.values()) == 5160
    assert sizes["train"] == pytest.approx(0.7 * 5160, abs=2)
    texts = {s: {" ".join(x.split()) for x in t} for s, t in data.texts.items()}
    assert not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    assert not texts["train"] & texts["val"]
    # stratified: each part holds its share of the 642 spam messages (0.7 * 642 = 449.4, the
    # rest halved); a split that ignores the labels is off by ~11 messages (one sd)
    spam = {s: int(data.y(s).sum()) for s in data.texts}
    assert spam == {"train": 449, "val": 96, "test": 97}
    assert sizes == {"train": 3611, "val": 774, "test": 775}
    again = load_sms_spam("sms_spam", str(shared_data / "sms_spam"), True, split)
    assert again.texts["test"] == data.texts["test"]


def test_stratified_split_keeps_proportions_and_rejects_bad_ratios():
    labels = ["a"] * 80 + ["b"] * 20
    parts = stratified_split(labels, [0.5, 0.25, 0.25], seed=0)
    assert sorted(i for p in parts for i in p) == list(range(100))
    assert [sum(labels[i] == "b" for i in p) for p in parts] == [10, 5, 5]
    with pytest.raises(DataError, match="sum"):
        stratified_split(labels, [0.5, 0.4], seed=0)


# ----------------------------------------------------------------- downloads (file:// URLs)


def _source(name: str, files: dict[str, Path]) -> TaskSource:
    return TaskSource(
        name,
        "synthetic",
        "test",
        {
            role: RemoteFile(path.name, path.resolve().as_uri(), sha256_file(path))
            for role, path in files.items()
        },
    )


# the real files' form: a bare backslash where the text had a line break (first rows of train.csv)
AG_ROWS = [
    (
        "3",
        "Wall St. Bears Claw Back Into the Black (Reuters)",
        "Reuters - Short-sellers, Wall Street's dwindling\\band of ultra-cynics, are seeing "
        "green again.",
    ),
    ("2", "Yankees win", "The Yankees beat the Red Sox 5-3."),
    ("1", "Talks in Iraq", "Leaders met for the\\news conference.\\\\ More later."),
    ("4", "New chip", 'Intel unveiled a "faster" chip.'),
]


def _ag_csv(path: Path, rows) -> Path:
    lines = []
    for label, title, desc in rows:
        q = [f'"{x.replace(chr(34), chr(34) * 2)}"' for x in (label, title, desc)]
        lines.append(",".join(q))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ag_news_downloads_verifies_and_parses(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    train = _ag_csv(remote / "train.csv", AG_ROWS * 10)
    test = _ag_csv(remote / "test.csv", AG_ROWS)
    source = _source("ag_news", {"train": train, "test": test})
    cache = tmp_path / "cache"
    data = load_ag_news("ag", str(cache), False, 0.1, 1234, source=source)
    assert (cache / "train.csv").read_bytes() == train.read_bytes()  # downloaded into the cache
    assert data.classes == ["World", "Sports", "Business", "Sci/Tech"]
    assert data.labels["test"] == ["Business", "Sports", "World", "Sci/Tech"]
    assert data.texts["test"][0] == (
        "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, "
        "Wall Street's dwindling band of ultra-cynics, are seeing green again."
    )
    assert data.texts["test"][2] == "Talks in Iraq Leaders met for the news conference. More later."
    assert data.texts["test"][3] == 'New chip Intel unveiled a "faster" chip.'
    assert len(data.texts["val"]) == 4 and len(data.texts["train"]) == 36  # stratified 10%
    # the second load uses the verified cache, even offline
    assert load_ag_news("ag", str(cache), True, 0.1, 1234, source=source).texts == data.texts


def test_a_corrupted_task_file_is_refused_with_the_fix(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    source = _source(
        "ag_news",
        {
            "train": _ag_csv(remote / "train.csv", AG_ROWS),
            "test": _ag_csv(remote / "test.csv", AG_ROWS),
        },
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "train.csv").write_text('"1","x","y"\n')
    with pytest.raises(DataError) as err:
        load_ag_news("agn", str(cache), False, 0.1, 0, source=source)
    message = str(err.value)
    assert "checksum mismatch" in message and str(cache / "train.csv") in message
    assert source.files["train"].sha256 in message and "task.agn.data_dir" in message


def test_offline_without_the_file_names_url_and_setting(tmp_path):
    with pytest.raises(DataError) as err:
        load_task("imdb", parse_task_config("imdb", {"source": "imdb", "offline": True}))
    message = str(err.value)
    assert TASK_SOURCES["imdb"].files["archive"].url in message
    assert "task.imdb.data_dir" in message and "aclImdb_v1.tar.gz" in message
    assert "task.imdb.offline=false" in message and "corpus." not in message


def _imdb_archive(path: Path, reviews: dict[str, list[tuple[str, str]]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for split, items in reviews.items():
            for i, (label, text) in enumerate(items):
                data = text.encode()
                info = tarfile.TarInfo(
                    f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt"
                )
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("aclImdb/train/unsup/0_0.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"skip"))
        info = tarfile.TarInfo("aclImdb/README")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    return path


def test_imdb_archive_is_read_like_the_original(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    train = [("pos", f"Great film {i}.<br /><br />Loved it.") for i in range(10)]
    train += [("neg", f"Awful film {i}.") for i in range(10)]
    test = [("pos", "Wonderful."), ("neg", "Terrible.")]
    archive = _imdb_archive(remote / "aclImdb_v1.tar.gz", {"train": train, "test": test})
    source = _source("imdb", {"archive": archive})
    data = load_imdb("imdb", str(tmp_path / "cache"), False, 0.1, 0, source=source)
    assert data.classes == ["neg", "pos"]
    assert sorted(data.texts["test"]) == ["Terrible.", "Wonderful."]
    assert len(data.texts["train"]) == 18 and len(data.texts["val"]) == 2
    assert all("<br />" not in t for t in data.texts["train"])
    assert "Great film 0. Loved it." in data.texts["train"] + data.texts["val"]


# ----------------------------------------------------------------- bring your own


def test_csv_with_given_splits_and_without_a_header(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.tsv").write_text('good\t"quoted" text\tpos\nbad\tthing\tneg\n' * 5)
    cfg = CsvConfig(
        files={"train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "test.tsv")},
        text_columns=[0, 1],
        label_column=2,
        delimiter="\t",
        header=False,
        quoting=False,
    )
    data = load_csv("mine", cfg, None, 0.2, 0)
    assert data.texts["test"][0] == 'good "quoted" text'
    assert data.classes == ["neg", "pos"]
    assert len(data.texts["val"]) == 2 and len(data.texts["train"]) == 8


def test_csv_one_file_with_split_ratios_through_the_task_config(tmp_path):
    path = tmp_path / "all.csv"
    path.write_text("id,body,tag\n" + "".join(f"{i},text {i},{'xy'[i % 2]}\n" for i in range(40)))
    cfg = parse_task_config(
        "mine",
        {
            "source": "csv",
            "csv": {"files": {"all": str(path)}, "text_columns": ["body"], "label_column": "tag"},
            "split": {"ratios": [0.5, 0.25, 0.25], "seed": 3},
        },
    )
    data = load_task("mine", cfg)
    assert {s: len(t) for s, t in data.texts.items()} == {"train": 20, "val": 10, "test": 10}
    assert data.files["test"]["selector"].startswith("stratified")


def test_csv_errors_name_the_setting(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\nhello,a\n")
    cfg = CsvConfig(files={"all": str(path)}, label_column="class")
    with pytest.raises(DataError, match="label_column='class' is not a column"):
        load_csv("mine", cfg, SplitConfig(), 0.1, 0)
    cfg = CsvConfig(files={"train": str(tmp_path / "missing.csv")})
    with pytest.raises(DataError, match=r"task\.mine\.csv\.files\.train=.*does not exist"):
        load_csv("mine", cfg, None, 0.1, 0)
    with pytest.raises(DataError, match=r"needs task\.mine\.csv\.files\.train and"):
        load_csv("mine", CsvConfig(), None, 0.1, 0)
    cfg = CsvConfig(files={"train": str(path)})
    with pytest.raises(DataError, match=r"task\.mine\.csv\.files\.test is missing"):
        load_csv("mine", cfg, None, 0.1, 0)


def test_csv_stray_quote_is_an_error_with_the_line_and_the_fix(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text('label\ttext\npos\tGreat film\nneg\t"unclosed quote, dull\npos\tnice one\n')
    cfg = CsvConfig(files={"all": str(path)}, delimiter="\t")
    with pytest.raises(DataError) as err:
        load_csv("mine", cfg, SplitConfig(), 0.1, 0)
    message = str(err.value)
    assert f"{path}:4" in message and "task.mine.csv.quoting=false" in message
    cfg.quoting = False  # the quote is text: every row is kept
    texts, labels = read_csv_split(path, cfg, "mine")
    assert texts == ["Great film", '"unclosed quote, dull', "nice one"]
    assert labels == ["pos", "neg", "pos"]


@pytest.mark.parametrize("header", [True, False])
def test_csv_row_with_a_delimiter_in_its_text_is_an_error_not_shifted_columns(header, tmp_path):
    path = tmp_path / "reviews.csv"
    rows = "great film,pos\ndull,neg\ngreat, really great,pos\nfine,pos\n"
    path.write_text(("text,label\n" if header else "") + rows)
    cfg = CsvConfig(files={"all": str(path)}, header=header, text_columns=[0], label_column=1)
    with pytest.raises(DataError) as err:
        read_csv_split(path, cfg, "mine")
    width = "the header has 2" if header else "most rows have 2"
    assert str(err.value) == (
        f"task 'mine': {path}:{4 if header else 3} has 3 fields, {width}: a ',' inside a text? "
        'Quote that field ("...") or set task.mine.csv.delimiter to one the texts do not contain'
    )
    path.write_text(("text,label\n" if header else "") + rows.replace("great, really great",
                    '"great, really great"'))  # fmt: skip
    texts, labels = read_csv_split(path, cfg, "mine")
    assert texts[2] == "great, really great" and labels == ["pos", "neg", "pos", "pos"]


@pytest.mark.parametrize("given", ["tab", "\\t", "\t"])
def test_csv_tab_delimiter_as_a_command_line_gives_it(given, tmp_path):
    # 'task.csv.csv.delimiter="\t"' reaches the config as backslash-t; "tab" says it plainly
    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\ngreat, really\tpos\ndull\tneg\n")
    cfg = CsvConfig(files={"all": str(path)}, delimiter=given)
    assert read_csv_split(path, cfg, "mine") == (["great, really", "dull"], ["pos", "neg"])
    cfg.delimiter = ";;"
    with pytest.raises(DataError, match=r"delimiter=';;' must be one character \(tab: task"):
        read_csv_split(path, cfg, "mine")


def test_csv_train_with_one_class_is_named_first_and_unseen_test_labels_are_logged(
    tmp_path, caplog
):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\ngood,pos\nnice,pos\n")
    test.write_text("text,label\nbad,neg\nok,pos\n")
    files = {"train": str(train), "test": str(test)}
    with pytest.raises(DataError) as err:  # not "test has the label 'neg'": train is the cause
        load_task("mine", parse_task_config("mine", {"source": "csv", "csv": {"files": files}}))
    assert str(err.value) == (
        f"task 'mine': train ({train}) has only the label(s) ['pos']; a classifier needs two "
        "classes or more in train"
    )
    train.write_text(
        "text,label\n" + "".join(f"t{i},{'pos' if i % 2 else 'neu'}\n" for i in range(40))
    )
    cfg = {"source": "csv", "classes": ["neg", "neu", "pos"], "csv": {"files": files}}
    assert load_task("mine", parse_task_config("mine", cfg)).classes == ["neg", "neu", "pos"]
    assert (
        "task 'mine': test has label(s) ['neg'] that train has not: no classifier predicts them"
        in caplog.messages
    )


def test_task_settings_of_the_wrong_type_name_the_key():
    cases = {
        "probe": ({"C": "abc"}, "task.p.probe.C='abc': expected a list, e.g. task.p.probe.C=[...]"),
        "cv_folds": ("abc", "task.p.cv_folds='abc': expected a whole number"),
        "finetune": ({"epochs": 2.5}, "task.p.finetune.epochs=2.5: expected a whole number"),
        "offline": ("yes", "task.p.offline='yes': expected true or false"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(DataError) as err:
            parse_task_config("p", {"source": "polarity", key: value})
        assert str(err.value) == message
    cfg = parse_task_config("p", {"source": "polarity", "classes": [0, 1], "probe": {"C": [1]}})
    assert cfg.classes == ["0", "1"] and cfg.probe.C == [1]  # labels are texts, C a number


def test_csv_in_another_encoding_names_the_line_and_the_setting(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nfine,a\ncaf\u00e9 au lait,b\n".encode("latin-1"))
    cfg = CsvConfig(files={"train": str(path), "test": str(path)})
    with pytest.raises(DataError) as err:
        read_csv_split(path, cfg, "mine")
    message = str(err.value)
    assert f"{path}:3 is not valid UTF-8" in message and "task.mine.csv.encoding" in message
    cfg.encoding = "latin-1"
    assert read_csv_split(path, cfg, "mine")[0] == ["fine", "caf\u00e9 au lait"]


def test_csv_with_a_byte_order_mark_and_duplicates_in_the_pool(tmp_path):
    path = tmp_path / "excel.csv"
    rows = "".join(f"text {i},{'xy'[i % 2]}\n" for i in range(20))
    path.write_bytes(("text,label\n" + rows + rows).encode("utf-8-sig"))  # every text twice
    cfg = CsvConfig(files={"all": str(path)})
    data = load_csv("mine", cfg, SplitConfig([0.5, 0.25, 0.25]), 0.1, 0)
    pools = [set(t) for t in data.texts.values()]
    assert sum(len(t) for t in data.texts.values()) == 20  # one copy of each text
    assert not (pools[0] & pools[1] or pools[0] & pools[2] or pools[1] & pools[2])
    kept = load_csv("mine", cfg, SplitConfig([0.5, 0.25, 0.25]), 0.1, 0, dedupe=False)
    assert sum(len(t) for t in kept.texts.values()) == 40
    path.write_text("text,label\nsame,x\nsame,y\nother,x\nmore,y\n")
    with pytest.raises(DataError, match=r"'same' has labels x and y; .*task\.mine\.dedupe=false"):
        load_csv("mine", cfg, SplitConfig([0.5, 0.25, 0.25]), 0.1, 0)


def test_task_config_errors_name_the_key():
    with pytest.raises(DataError, match=r"task.sst2: unknown key\(s\) \['colour'\]"):
        parse_task_config("sst2", {"source": "sst2", "colour": "red"})
    with pytest.raises(DataError, match="task.x.source='nope' is unknown"):
        parse_task_config("x", {"source": "nope"})
    with pytest.raises(DataError, match=r"task.x.probe: unknown key\(s\) \['c'\]"):
        parse_task_config("x", {"source": "polarity", "probe": {"c": [1]}})
    with pytest.raises(DataError, match="cv_folds"):
        load_task("p", parse_task_config("p", {"source": "polarity"}))


def test_every_task_config_composes_and_parses(tmp_path):
    from dataclasses import asdict

    from conftest import CONF, compose_train

    from lineage.tasks.base import FinetuneConfig, ProbeConfig

    names = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    assert {"polarity", "sst2", "sms_spam", "ag_news", "imdb", "csv"} <= set(names)
    cfg = compose_train([f"task=[{','.join(names)}]", "task.sst2.probe.C=[1]"], tmp_path)
    parsed = {name: parse_task_config(name, cfg.task[name]) for name in names}
    assert parsed["sst2"].probe.C == [1]
    # conf/task_defaults.yaml states the same defaults as the dataclasses
    assert asdict(parsed["ag_news"].probe) == asdict(ProbeConfig())
    assert asdict(parsed["ag_news"].finetune) == asdict(FinetuneConfig())


@pytest.mark.parametrize("n", [29, 50, 101])
def test_max_train_keeps_exactly_n_stratified(n):
    from lineage.tasks.data import TaskData

    labels = ["a"] * 120 + ["b"] * 80
    texts = [f"text {i}" for i in range(200)]
    data = TaskData("t", {"train": texts}, {"train": labels}, ["a", "b"])
    subsample(data, "train", n, seed=0)
    assert len(data.texts["train"]) == len(data.labels["train"]) == n
    assert abs(data.labels["train"].count("b") - 0.4 * n) <= 1  # the class shares kept
    assert all(data.labels["train"][i] == labels[int(t.split()[1])] for i, t in
               enumerate(data.texts["train"]))  # fmt: skip
    with pytest.raises(DataError, match=r"max_train=1: cannot keep a stratified 1 of train"):
        subsample(data, "train", 1, seed=0)
