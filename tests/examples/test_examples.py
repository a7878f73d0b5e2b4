"""Each example runs end to end on tiny data, and its output says what it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from simclr_cli import load_model
from tests.conftest import TINY_BACKBONE, tiny_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NUMBER = r"([0-9]+\.[0-9]+)"


def run_example(name: str, *arguments: object) -> list[str]:
    """Run ``examples/NAME`` with this checkout's package and return its output lines."""
    # The script's own folder comes first on sys.path; the checkout must come right after it.
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(EXAMPLES / name), *map(str, arguments)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=540, cwd=ROOT, env=environment
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def import_example(name: str):
    """Import ``examples/NAME`` as a module, to call its functions."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_fraction(text: str) -> float:
    value = float(text)
    assert 0.0 <= value <= 1.0, text
    return value


def test_examples__each_has_a_docstring_that_shows_how_to_run_it():
    for path in sorted(EXAMPLES.glob("*.py")):
        module = import_example(path.name)
        assert f"python examples/{path.name}" in (module.__doc__ or ""), path.name


@pytest.mark.slow
def test_pretrain_and_search__runs_on_generated_shapes():
    lines = run_example(
        "pretrain_and_search.py",
        "--backbone", TINY_BACKBONE, "--steps", 2, "--batch-size", 8, "--neighbours", 2,
    )  # fmt: skip
    assert lines[0].startswith("trained 2 steps")
    assert lines[1].startswith("query: ") and len(lines) == 4
    for line in lines[2:]:
        similarity, path = line.split()
        assert -1.0 <= float(similarity) <= 1.0001 and Path(path).suffix == ".png"


@pytest.mark.slow
def test_pretrain_and_probe__prints_accuracies_beside_a_random_baseline():
    lines = run_example(
        "pretrain_and_probe.py",
        "--backbone", TINY_BACKBONE, "--steps", 2, "--batch-size", 8, "--images-per-class", 4,
    )  # fmt: skip
    assert lines[0].startswith("pretrained 2 steps")
    assert lines[1] == "24 training and 12 validation images"
    rows = {}
    for line in lines[3:]:
        match = re.fullmatch(rf"(simclr|random init)\s+{NUMBER}\s+{NUMBER}", line)
        assert match, line
        rows[match[1]] = (as_fraction(match[2]), as_fraction(match[3]))
    assert set(rows) == {"simclr", "random init"}


@pytest.mark.slow
@pytest.mark.parametrize("batched", [False, True], ids=["per-image", "batched"])
def test_own_training_loop__trains_and_saves_timm_weights(tmp_path: Path, batched: bool):
    out = tmp_path / "backbone.safetensors"
    flags = ["--batched"] if batched else []
    lines = run_example(
        "own_training_loop.py",
        "--backbone", TINY_BACKBONE, "--steps", 3, "--batch-size", 6, "--images-per-class", 2,
        "--out", out, *flags,
    )  # fmt: skip
    losses = [
        float(m[1]) for line in lines if (m := re.fullmatch(rf"step \d+: loss {NUMBER}", line))
    ]
    assert len(losses) == 3 and all(0.0 < loss < 10.0 for loss in losses)
    assert lines[-1] == f"saved {out}"
    # The saved weights are a timm state dict of the backbone.
    tensors = load_file(str(out))
    reference = timm.create_model(TINY_BACKBONE, num_classes=0).state_dict()
    assert set(tensors) == set(reference)


@pytest.fixture(scope="module")
def imagenet_stem_model(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imagenet_stem") / "run"
    from simclr_cli import pretrain

    return pretrain(config=tiny_config(shapes_dir, out, stem="imagenet")).model_path


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_timm_finetune__timm_model_gives_load_model_features(
    request: pytest.FixtureRequest, stem: str
):
    path = request.getfixturevalue("trained_model" if stem == "cifar" else "imagenet_stem_model")
    example = import_example("timm_finetune.py")
    timm_model, preprocessing = example.load_backbone(path)
    model = load_model(path)
    assert preprocessing["stem"] == model.metadata.stem == stem
    assert preprocessing["image_size"] == model.metadata.image_size
    assert tuple(preprocessing["mean"]) == model.metadata.mean
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(timm_model.eval()(images), model.backbone(images))


@pytest.mark.slow
def test_timm_finetune__fine_tunes_and_writes_a_timm_model(
    trained_model: Path, shapes_dir: Path, shapes_val_dir: Path, tmp_path: Path
):
    out = tmp_path / "finetuned.safetensors"
    lines = run_example(
        "timm_finetune.py",
        "--model", trained_model, "--train", shapes_dir, "--val", shapes_val_dir,
        "--epochs", 2, "--max-steps", 3, "--batch-size", 8, "--out", out,
    )  # fmt: skip
    assert lines[0].endswith(": 3 classes")
    before = re.fullmatch(rf"before fine-tuning: val accuracy {NUMBER}", lines[1])
    after = re.fullmatch(rf"after fine-tuning: val accuracy {NUMBER}", lines[-2])
    assert before and after
    as_fraction(before[1])
    as_fraction(after[1])
    assert lines[-1] == f"saved {out}"
    tensors = load_file(str(out))
    # A backbone plus a 3-class classifier, in timm's names.
    classifier = timm.create_model(TINY_BACKBONE, num_classes=3).get_classifier()
    assert tensors["fc.weight"].shape == classifier.weight.shape


@pytest.mark.slow
def test_timm_finetune__without_a_model_pretrains_one_first():
    lines = run_example(
        "timm_finetune.py",
        "--backbone", TINY_BACKBONE, "--pretrain-steps", 1, "--images-per-class", 2,
        "--epochs", 1, "--batch-size", 4,
    )  # fmt: skip
    assert lines[0].startswith(f"{TINY_BACKBONE} from ") and lines[0].endswith(": 6 classes")
    assert re.fullmatch(rf"after fine-tuning: val accuracy {NUMBER}", lines[-1])
