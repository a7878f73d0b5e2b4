"""Embedding images with a saved model and writing the results."""

from __future__ import annotations

import csv
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

from simclr_cli.core.config import EmbedConfig
from simclr_cli.core.errors import (
    ConfigError,
    DataError,
    ImageDecodeError,
    MissingDependencyError,
)
from simclr_cli.core.eval.embed import embed, embed_images, read_embeddings, write_embeddings
from simclr_cli.core.eval.embed_output import partial_folder
from simclr_cli.core.model.files import load_model
from simclr_cli.core.progress import ProgressEvent


def test_embed__folder_gives_one_row_per_image(trained_model: Path, shapes_dir: Path):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    model = load_model(trained_model)
    assert len(result.paths) == 8
    assert result.embeddings.shape == (8, model.metadata.feature_dim)
    assert result.embeddings.dtype == np.float32


def test_embed__projection_uses_head_output(trained_model: Path, shapes_dir: Path):
    image = next((shapes_dir / "square").iterdir())
    result = embed(config=EmbedConfig(model=trained_model, inputs=[image], projection=True))
    assert result.embeddings.shape == (1, 128)


def test_embed__is_deterministic_and_matches_python_api(trained_model: Path, shapes_dir: Path):
    images = sorted((shapes_dir / "stripes").iterdir())[:3]
    first = embed(config=EmbedConfig(model=trained_model, inputs=images)).embeddings
    second = embed_images(load_model(trained_model), images)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_embed__unreadable_image_raises_under_fail(trained_model: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(ImageDecodeError, match=r"bad\.png: not an image file.*skip"):
        embed(config=EmbedConfig(model=trained_model, inputs=[bad], on_bad_image="fail"))


def test_embed__nothing_readable_is_refused_under_skip(trained_model: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(DataError, match=r"none of the 1 images could be read"):
        embed(config=EmbedConfig(model=trained_model, inputs=[bad]))


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".csv", ".jsonl"])
def test_write_embeddings__round_trip(
    trained_model: Path, shapes_dir: Path, tmp_path: Path, suffix: str
):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    path = tmp_path / f"out{suffix}"
    write_embeddings(result, path)
    if suffix == ".npy":
        loaded = np.load(path)
    elif suffix == ".safetensors":
        loaded = load_file(str(path))["embeddings"]
        with safe_open(str(path), "np") as handle:
            paths = json.loads(handle.metadata()["paths"])
        assert paths == [str(p) for p in result.paths]
    elif suffix == ".csv":
        with open(path, newline="") as stream:
            rows = list(csv.reader(stream))
        assert rows[0][0] == "path" and rows[1][0] == str(result.paths[0])
        loaded = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows[0]["path"] == str(result.paths[0])
        loaded = np.array([row["embedding"] for row in rows])
    np.testing.assert_allclose(loaded, result.embeddings, rtol=1e-5, atol=1e-6)


def test_write_embeddings__unknown_suffix_raises(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    with pytest.raises(ConfigError, match=r"\.parquet"):
        write_embeddings(result, tmp_path / "out.txt")


def test_embed__model_and_images_gives_the_same_rows_for_every_input_form(
    trained_model: Path, shapes_dir: Path
):
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    model = load_model(trained_model)
    files = sorted((shapes_dir / "circle").iterdir())[:3]
    pictures = [Image.open(f).convert("RGB") for f in files]
    uint8_batch = torch.stack([TF.pil_to_tensor(p) for p in pictures])
    expected = embed(config=EmbedConfig(model=trained_model, inputs=files)).embeddings
    forms = {
        "str paths": [str(f) for f in files],
        "PIL images": pictures,
        "uint8 batch": uint8_batch,
        "float batch": uint8_batch.float() / 255,
        "list of tensors": list(uint8_batch),
        "numpy batch": uint8_batch.numpy(),
    }
    for name, images in forms.items():
        rows = embed(model, images)
        assert rows.shape == expected.shape, name
        np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_embed__model_and_single_image_tensor_gives_one_row(trained_model: Path):
    model = load_model(trained_model)
    rows = embed(model, torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8), projection=True)
    assert rows.shape == (1, model.metadata.head_output_dim)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 3, 32, 32) * 4 - 2, r"\[0, 1\]"),
        (torch.zeros(2, 32, 32, 3, dtype=torch.uint8), r"\(B, 3, H, W\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "uint8 or float"),
        ([42], "cannot embed a int"),
    ],
)
def test_embed__model_and_bad_images_raise_data_error(
    trained_model: Path, images: object, message: str
):
    with pytest.raises(DataError, match=message):
        embed(load_model(trained_model), images)


def test_embed__folder_passed_to_python_form_raises(trained_model: Path, shapes_dir: Path):
    with pytest.raises(DataError, match="is a folder"):
        embed(load_model(trained_model), [shapes_dir])


def test_embed__model_and_config_together_raise_type_error(trained_model: Path):
    config = EmbedConfig(model=trained_model, inputs=[trained_model])
    with pytest.raises(TypeError, match="not both"):
        embed(load_model(trained_model), [], config=config)
    with pytest.raises(TypeError):
        embed()


# ---------------------------------------------------------------------------------------------
# Streaming to a file, bad images, file lists, resume.

FORMATS = [".npy", ".safetensors", ".csv", ".jsonl", ".parquet"]


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def mixed_inputs(shapes_dir: Path, tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Two folders of good images, a bomb, a text file named .jpg: (inputs, good files)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bomb.png").write_bytes(_bomb_png(60000, 60000))
    (bad / "notes.jpg").write_text("not an image")
    circles = sorted((shapes_dir / "circle").iterdir())[:5]
    squares = sorted((shapes_dir / "square").iterdir())[:4]
    inputs = [*circles[:3], bad / "bomb.png", *circles[3:], bad / "notes.jpg", *squares]
    return inputs, [*circles, *squares]


@pytest.mark.parametrize("suffix", FORMATS)
def test_embed__streams_every_format_and_skips_bad_images(
    trained_model: Path, mixed_inputs: tuple[list[Path], list[Path]], tmp_path: Path, suffix: str
):
    inputs, good = mixed_inputs
    expected = embed(config=EmbedConfig(model=trained_model, inputs=good)).embeddings
    output = tmp_path / f"out{suffix}"
    result = embed(
        config=EmbedConfig(
            model=trained_model,
            inputs=inputs,
            output=output,
            batch_size=3,
            skipped=tmp_path / "skipped.txt",
        )
    )
    assert [p.name for p in result.paths] == [p.name for p in good]
    assert {Path(b.path).name for b in result.skipped} == {"bomb.png", "notes.jpg"}
    names, rows = read_embeddings(output)
    assert names == [str(p) for p in good]
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)
    assert not partial_folder(output).exists()
    listed = (tmp_path / "skipped.txt").read_text().splitlines()
    assert len(listed) == 2 and "60000 x 60000 pixels" in listed[0]
    if suffix == ".npy":
        assert np.load(output).shape == (len(good), rows.shape[1])
        assert result.embeddings is not None and result.embeddings.shape == rows.shape


def test_embed__bomb_message_is_ours_with_the_right_fix(
    trained_model: Path, mixed_inputs: tuple[list[Path], list[Path]]
):
    bomb = mixed_inputs[0][3]
    with pytest.raises(ImageDecodeError) as caught:
        embed(config=EmbedConfig(model=trained_model, inputs=[bomb], on_bad_image="fail"))
    message = str(caught.value)
    assert "60000 x 60000 pixels" in message and "SIMCLR_MAX_IMAGE_PIXELS" in message
    assert "convert it to JPEG or PNG" not in message and "DOS attack" not in message


def test_embed__file_list_relative_to_its_folder_with_missing_lines(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    listed = sorted((shapes_dir / "stripes").iterdir())[:3]
    file_list = shapes_dir / "list.txt"
    lines = [str(p.relative_to(shapes_dir)) for p in listed] + ["stripes/gone.png", ""]
    file_list.write_text("\n".join(lines) + "\n")
    try:
        result = embed(config=EmbedConfig(model=trained_model, file_list=file_list))
        assert [p.name for p in result.paths] == [p.name for p in listed]
        assert [Path(b.path).name for b in result.skipped] == ["gone.png"]
        with pytest.raises(ImageDecodeError, match=r"gone\.png: file not found"):
            embed(config=EmbedConfig(model=trained_model, file_list=file_list, on_bad_image="fail"))
    finally:
        file_list.unlink()


def _interrupt_after(batches: int):
    """A progress callback that stops the run (as Ctrl-C would) after some batches."""
    seen = []

    def progress(event: ProgressEvent) -> None:
        if event.kind == "advance":
            seen.append(event.completed)
            if len(seen) == batches:
                raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("suffix", FORMATS)
def test_embed__resume_continues_an_interrupted_output(
    trained_model: Path, mixed_inputs: tuple[list[Path], list[Path]], tmp_path: Path, suffix: str
):
    inputs, good = mixed_inputs
    whole = tmp_path / f"whole{suffix}"
    embed(config=EmbedConfig(model=trained_model, inputs=inputs, output=whole, batch_size=2))
    output = tmp_path / f"out{suffix}"
    config = EmbedConfig(model=trained_model, inputs=inputs, output=output, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        embed(config=config, progress=_interrupt_after(3))
    assert not output.exists() and (partial_folder(output) / "progress.json").exists()
    with pytest.raises(DataError, match=r"6 of 11 images done.*--resume"):
        embed(config=config)
    config.resume = True
    result = embed(config=config)
    assert result.resumed_rows == 5 and len(result.paths) == len(good)
    assert {Path(b.path).name for b in result.skipped} == {"bomb.png", "notes.jpg"}
    names, rows = read_embeddings(output)
    expected_names, expected = read_embeddings(whole)
    assert [Path(n).name for n in names] == [Path(n).name for n in expected_names]
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)
    assert not partial_folder(output).exists()


def test_embed__resume_refuses_a_partial_output_of_other_inputs(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    output = tmp_path / "out.npy"
    files = sorted((shapes_dir / "circle").iterdir())
    config = EmbedConfig(model=trained_model, inputs=files, output=output, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        embed(config=config, progress=_interrupt_after(1))
    other = EmbedConfig(
        model=trained_model, inputs=files[:-1], output=output, batch_size=2, resume=True
    )
    with pytest.raises(DataError, match="written for other inputs, count"):
        embed(config=other)


def test_embed__parquet_without_pyarrow_is_refused_before_any_work(
    trained_model: Path, shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    config = EmbedConfig(model=trained_model, inputs=[shapes_dir], output=tmp_path / "x.parquet")
    with pytest.raises(MissingDependencyError, match=r"simclr-cli\[parquet\]"):
        embed(config=config)
    assert not partial_folder(tmp_path / "x.parquet").exists()


def test_embed__workers_keep_the_order(trained_model: Path, shapes_dir: Path, tmp_path: Path):
    files = sorted(shapes_dir.rglob("*.png"))
    expected = embed(config=EmbedConfig(model=trained_model, inputs=files, workers=0))
    output = tmp_path / "out.jsonl"
    result = embed(
        config=EmbedConfig(
            model=trained_model, inputs=files, workers=2, batch_size=4, output=output
        )
    )
    names, rows = read_embeddings(output)
    assert names == [str(p) for p in expected.paths] == [str(p) for p in result.paths]
    assert expected.embeddings is not None
    np.testing.assert_allclose(rows, expected.embeddings, rtol=1e-5, atol=1e-6)
