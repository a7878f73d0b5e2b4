"""Fine-tuning in fp16 on the CPU, with loss scaling."""

from __future__ import annotations

import math
from pathlib import Path

from simclr_cli.core.config import FinetuneConfig
from simclr_cli.core.eval.finetune import finetune
from simclr_cli.core.model.classifier import load_classifier


def test_finetune__fp16_on_the_cpu_trains_with_a_loss_scaler(
    trained_model: Path, shapes_dir: Path, shapes_val_dir: Path, tmp_path: Path
):
    out = tmp_path / "classifier.safetensors"
    config = FinetuneConfig(
        model=trained_model,
        train=shapes_dir,
        val=shapes_val_dir,
        out=out,
        epochs=1,
        batch_size=8,
        workers=0,
        precision="fp16",
        device="cpu",
    )
    result = finetune(config=config)
    assert result.nonfinite_steps == 0
    assert result.scaler_skipped_steps <= 3  # The 3 steps of the epoch; the scale settles first.
    assert math.isfinite(result.history[0]["loss"])
    assert {"nonfinite_steps", "scaler_skipped_steps"} <= result.to_dict().keys()
    assert load_classifier(out).classes == ["circle", "square", "stripes"]
