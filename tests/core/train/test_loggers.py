"""The CSV and TensorBoard loggers: same names as metrics.jsonl, read back from their files."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from simclr_cli.core.errors import ConfigError
from simclr_cli.core.train import loggers as loggers_module
from simclr_cli.core.train.loggers import CSVLogger, check_loggers, trim_csv, trim_jsonl
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.train.run_folder import create_logger
from tests.conftest import tiny_config

RECORDS = [
    {"step": 1, "loss": 2.5, "lr": 0.1, "data_wait": 0.01},
    {"step": 2, "knn_top1": 0.25, "eval_seconds": 0.5},
    {"step": 2, "loss": 2.25, "lr": 0.05, "data_wait": 0.02, "knn_top1": 0.25},
]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def read_tensorboard(folder: Path) -> dict[str, list[tuple[int, float]]]:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    accumulator = event_accumulator.EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_csv_logger__adds_columns_and_leaves_missing_cells_empty(tmp_path: Path):
    logger = create_logger(["csv"], run_dir=tmp_path)
    for record in RECORDS:
        logger.log(record)
    logger.close()
    columns, rows = read_csv(tmp_path / "metrics.csv")
    assert columns == ["step", "loss", "lr", "data_wait", "knn_top1", "eval_seconds"]
    assert [row["step"] for row in rows] == ["1", "2", "2"]
    assert rows[0]["knn_top1"] == "" and float(rows[1]["knn_top1"]) == 0.25
    assert float(rows[2]["loss"]) == 2.25 and rows[2]["eval_seconds"] == ""


def test_csv_logger__resumed_run_continues_the_table(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    CSVLogger(path).log(RECORDS[0])
    CSVLogger(path).log({"step": 3, "loss": 2.0, "lr": 0.01, "data_wait": 0.0})
    assert [row["step"] for row in read_csv(path)[1]] == ["1", "3"]


def test_trim_csv__drops_rows_past_the_step_and_a_torn_row(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    logger = CSVLogger(path)
    for record in RECORDS:
        logger.log(record)
    logger.log({"step": 3, "loss": 2.0})
    with path.open("a") as file:
        file.write("4,1.9")  # The last row, cut short by a crash.
    trim_csv(path, last_step=2)
    columns, rows = read_csv(path)
    assert columns == ["step", "loss", "lr", "data_wait", "knn_top1", "eval_seconds"]
    assert [row["step"] for row in rows] == ["1", "2", "2"]
    trim_csv(tmp_path / "missing.csv", last_step=2)
    assert not (tmp_path / "missing.csv").exists()


def test_trim_jsonl__drops_lines_past_the_step_and_a_torn_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps(record) for record in [*RECORDS, {"step": 3, "loss": 2.0}]]
    path.write_text("\n".join(lines) + '\n{"step": 4, "lo')
    trim_jsonl(path, last_step=2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == RECORDS


def test_tensorboard_logger__purge_step_hides_the_steps_logged_again(tmp_path: Path):
    pytest.importorskip("tensorboard")
    first = create_logger(["tensorboard"], run_dir=tmp_path)
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step)})
    first.close()
    resumed = create_logger(["tensorboard"], run_dir=tmp_path, resume_step=1)
    for step in (2, 3):
        resumed.log({"step": step, "loss": 10.0 * step})
    resumed.close()
    assert read_tensorboard(tmp_path / "tensorboard")["loss"] == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_tensorboard_logger__tags_are_the_record_keys(tmp_path: Path):
    pytest.importorskip("tensorboard")
    logger = create_logger(["tensorboard"], run_dir=tmp_path)
    for record in RECORDS:
        logger.log(record)
    logger.close()
    scalars = read_tensorboard(tmp_path / "tensorboard")
    assert set(scalars) == {"loss", "lr", "data_wait", "knn_top1", "eval_seconds"}
    assert [step for step, _ in scalars["loss"]] == [1, 2]
    assert [value for _, value in scalars["loss"]] == pytest.approx([2.5, 2.25])


def test_check_loggers__missing_tensorboard_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        loggers_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tensorboard" else real_find_spec(name, *args),
    )
    check_loggers(["csv"])
    with pytest.raises(ConfigError, match=r"pip install 'simclr-cli\[tensorboard\]'"):
        check_loggers(["tensorboard"])


def test_create_logger__disabled_writes_nothing(tmp_path: Path):
    logger = create_logger(["csv", "tensorboard"], run_dir=tmp_path, enabled=False)
    logger.log(RECORDS[0])
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_pretrain__every_logger_gets_the_metrics_jsonl_names(
    shapes_dir: Path, shapes_val_dir: Path, tmp_path: Path
):
    pytest.importorskip("tensorboard")
    config = tiny_config(
        shapes_dir,
        tmp_path / "run",
        max_steps=3,
        val=shapes_val_dir,
        eval_every=2,
        loggers=["csv", "tensorboard"],
    )
    run_dir = pretrain(config=config).run_dir
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = list(dict.fromkeys(key for record in records for key in record))
    columns, rows = read_csv(run_dir / "metrics.csv")
    assert columns == keys and len(rows) == len(records)
    assert [float(row["loss"]) for row in rows if row["loss"]] == [
        record["loss"] for record in records if "loss" in record
    ]
    scalars = read_tensorboard(run_dir / "tensorboard")
    assert set(scalars) == set(keys) - {"step"}
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3]
