"""`--json` on every command: one JSON object on one line, with the keys README.md lists."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from simclr_cli.cli import demo as demo_module
from simclr_cli.cli.app import app
from simclr_cli.core.demo import run_demo
from tests.core.test_demo import tiny_demo_config

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
TINY = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "8", "--workers", "0"]


def json_document(*arguments: object) -> dict[str, Any]:
    """Run ``simclr ARGUMENTS --json`` and parse its stdout, which must be one line."""
    result = runner.invoke(app, [*(str(argument) for argument in arguments), "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1, result.stdout
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def documented_keys() -> dict[str, tuple[set[str], bool]]:
    """The keys README's `--json` table lists per command, and whether the list is complete.

    Names in parentheses describe what a key holds, so they are not top-level keys; a row that
    ends with "the rest of ..." lists only some keys.
    """
    lines = README.read_text().splitlines()
    start = lines.index("| command | keys of its `--json` object |") + 2
    rows: dict[str, tuple[set[str], bool]] = {}
    for line in lines[start:]:
        match = re.fullmatch(r"\| `([a-z-]+)` \| (.+) \|", line)
        if match is None:
            break
        text = re.sub(r"\([^()]*\)", "", match.group(2))
        rows[match.group(1)] = (set(re.findall(r"`(\w+)`", text)), "the rest of" not in text)
    return rows


def check_keys(command: str, document: dict[str, Any]) -> None:
    keys, complete = documented_keys()[command]
    assert keys, command
    if complete:
        assert set(document) == keys, command
    else:
        assert keys <= set(document), command


@pytest.fixture(scope="module")
def pretrain_run(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-step run made by `simclr pretrain --json`: its folder and what it printed."""
    out = tmp_path_factory.mktemp("json") / "run"
    document = json_document("pretrain", shapes_dir, "--out", out, *TINY, "--max-steps", "2")
    return out, document


@pytest.fixture(scope="module")
def finetune_run(trained_model: Path, shapes_dir, shapes_val_dir, tmp_path_factory):
    """A classifier made by `simclr finetune --json`: its file and what it printed."""
    out = tmp_path_factory.mktemp("json") / "classifier.safetensors"
    document = json_document(
        "finetune",
        trained_model,
        *["--train", shapes_dir, "--val", shapes_val_dir, "--out", out],
        *["--epochs", "1", "--batch-size", "8", "--workers", "0"],
    )
    return out, document


def test_json__readme_lists_every_command():
    commands = set(typer.main.get_command(app).commands)
    assert set(documented_keys()) == commands


def test_json__pretrain(pretrain_run):
    out, document = pretrain_run
    check_keys("pretrain", document)
    assert document["run_dir"] == str(out) and document["steps"] == 2


def test_json__demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def tiny_run(*, config, progress):
        tiny = dataclasses.replace(tiny_demo_config(config.out), max_steps=config.max_steps)
        return run_demo(config=tiny, progress=progress)

    monkeypatch.setattr(demo_module, "run_demo", tiny_run)
    document = json_document("demo", "--out", tmp_path / "demo", "--steps", "2")
    check_keys("demo", document)
    check_keys("pretrain", document["pretrain"])


def test_json__embed(trained_model: Path, shapes_dir: Path):
    document = json_document("embed", trained_model, shapes_dir / "circle")
    check_keys("embed", document)
    assert len(document["embeddings"]) == 8 and document["map"] is None
    assert set(document["embeddings"][0]) == {"path", "embedding"}


def test_json__probe(trained_model: Path, shapes_dir: Path, shapes_val_dir: Path):
    document = json_document(
        "probe",
        trained_model,
        *["--train", shapes_dir, "--val", shapes_val_dir],
        *["--batch-size", "8", "--workers", "0", "--k", "5"],
    )
    check_keys("probe", document)


def test_json__finetune(finetune_run):
    out, document = finetune_run
    check_keys("finetune", document)
    assert document["classifier"] == str(out)


def test_json__predict(finetune_run, shapes_val_dir: Path):
    classifier, _ = finetune_run
    document = json_document("predict", classifier, shapes_val_dir / "circle", "--top-k", "2")
    check_keys("predict", document)
    assert len(document["images"]) == 4
    assert set(document["images"][0]) == {"path", "predictions"}


def test_json__visualize_aug(shapes_dir: Path):
    document = json_document("visualize-aug", shapes_dir, "-n", "1", "--image-size", "32")
    check_keys("visualize-aug", document)


def test_json__report(pretrain_run):
    out, _ = pretrain_run
    document = json_document("report", out)
    check_keys("report", document)
    assert document["steps"] == 2


def test_json__info(trained_model: Path):
    check_keys("info", json_document("info", trained_model))


def test_json__export(trained_model: Path, tmp_path: Path):
    document = json_document("export", trained_model, "-f", "torchscript", "-o", tmp_path / "ts")
    check_keys("export", document)


def test_json__index_search_and_duplicates(trained_model: Path, shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "ix"
    check_keys("index", json_document("index", trained_model, shapes_dir, "--out", out))
    query = sorted((shapes_dir / "circle").iterdir())[0]
    document = json_document("search", out, query, "--top-k", "2")
    check_keys("search", document)
    assert set(document["queries"][0]) == {"query", "in_index", "neighbours"}
    document = json_document("duplicates", out, "--outliers", "1")
    check_keys("duplicates", document)
    assert set(document["outliers"][0]) == {"path", "nearest_similarity", "nearest_path"}
