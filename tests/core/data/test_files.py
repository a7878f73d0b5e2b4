"""Finding images in folders and decoding them safely as RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_cli.core.data import files as files_module
from simclr_cli.core.data.files import (
    collect_inputs,
    find_images,
    find_labeled_images,
    listed_in_a_file,
    load_rgb,
    resolve_inputs,
)
from simclr_cli.core.errors import DataError, ImageDecodeError


def _save(path: Path, image: Image.Image, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def test_find_images__recursive_sorted_and_case_insensitive(tmp_path: Path):
    red = Image.new("RGB", (4, 4), "red")
    _save(tmp_path / "b" / "two.JPG", red)
    _save(tmp_path / "a" / "one.png", red)
    _save(tmp_path / "three.WebP", red)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/one.png", "b/two.JPG", "three.WebP"]


def test_find_images__missing_folder_raises(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        find_images(tmp_path / "nope")


def test_find_images__empty_folder_raises(tmp_path: Path):
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(DataError, match="holds no images"):
        find_images(tmp_path)


def test_find_images__file_instead_of_folder_raises(tmp_path: Path):
    path = _save(tmp_path / "x.png", Image.new("RGB", (2, 2)))
    with pytest.raises(DataError, match="is a file"):
        find_images(path)


def test_find_labeled_images__labels_from_subfolders(tmp_path: Path):
    for name in ("dog", "cat"):
        _save(tmp_path / name / "1.png", Image.new("RGB", (2, 2)))
    paths, labels, classes = find_labeled_images(tmp_path)
    assert classes == ["cat", "dog"]
    assert labels == [0, 1] and paths[0].parent.name == "cat"


def test_collect_inputs__files_and_folders_in_order(tmp_path: Path):
    one = _save(tmp_path / "one.png", Image.new("RGB", (2, 2)))
    _save(tmp_path / "more" / "b.png", Image.new("RGB", (2, 2)))
    _save(tmp_path / "more" / "a.png", Image.new("RGB", (2, 2)))
    assert [p.name for p in collect_inputs([one, tmp_path / "more"])] == [
        "one.png",
        "a.png",
        "b.png",
    ]
    with pytest.raises(DataError, match="does not exist"):
        collect_inputs([tmp_path / "missing.jpg"])


def test_load_rgb__applies_exif_orientation(tmp_path: Path):
    image = Image.new("RGB", (6, 2), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    path = _save(tmp_path / "rotated.jpg", image, exif=exif.tobytes())
    assert load_rgb(path).size == (2, 6)


def test_load_rgb__alpha_palette_and_16_bit_become_rgb(tmp_path: Path):
    transparent = _save(tmp_path / "alpha.png", Image.new("RGBA", (3, 3), (255, 0, 0, 0)))
    palette = _save(tmp_path / "palette.png", Image.new("RGB", (3, 3), "green").convert("P"))
    deep = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    sixteen = _save(tmp_path / "deep.png", deep)
    gray = _save(tmp_path / "gray.png", Image.new("L", (3, 3), 128))
    assert load_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(palette).getpixel((0, 0))[1] > 100
    assert load_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(gray).mode == "RGB"


def test_load_rgb__non_image_raises_decode_error(tmp_path: Path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is text")
    with pytest.raises(ImageDecodeError, match="not an image file"):
        load_rgb(path)


def test_resolve_inputs__several_inputs_then_the_list_relative_to_its_folder(tmp_path: Path):
    red = Image.new("RGB", (4, 4), "red")
    folder = tmp_path / "folder"
    _save(folder / "b.png", red)
    _save(folder / "a.png", red)
    single = _save(tmp_path / "single.png", red)
    listed = _save(tmp_path / "lists" / "photos" / "x.png", red)
    file_list = tmp_path / "lists" / "files.txt"
    file_list.write_text("photos/x.png\n\nphotos/gone.png\n" + str(single) + "\n")
    resolved = resolve_inputs([single, folder], file_list=file_list)
    assert resolved.paths == [single, folder / "a.png", folder / "b.png", listed, single]
    assert [Path(b.path).name for b in resolved.missing] == ["gone.png"]
    assert "file not found" in resolved.missing[0].reason and resolved.missing[0].fix


def test_resolve_inputs__dash_reads_standard_input_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _save(tmp_path / "x.png", Image.new("RGB", (4, 4)))
    monkeypatch.chdir(tmp_path)
    resolved = resolve_inputs([], file_list="-", stdin=io.StringIO("x.png\ny.png\n"))
    assert resolved.paths == [Path("x.png")] and resolved.missing[0].path == "y.png"


def test_resolve_inputs__nothing_usable_is_refused(tmp_path: Path):
    file_list = tmp_path / "files.txt"
    file_list.write_text("a.png\nb.png\n")
    with pytest.raises(DataError, match=r"none of the 2 listed files exists \(.*a\.png"):
        resolve_inputs([], file_list=file_list)
    file_list.write_text("\n\n")
    with pytest.raises(DataError, match="names no files"):
        resolve_inputs([], file_list=file_list)
    with pytest.raises(DataError, match="does not exist"):
        resolve_inputs([], file_list=tmp_path / "nope.txt")


def test_resolve_inputs__missing_input_on_the_command_line_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match=r"nope\.png does not exist"):
        resolve_inputs([tmp_path / "nope.png"])


def test_listed_in_a_file__hands_standard_input_on_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The ranks of a job cannot read the launcher's standard input; they get a file instead,
    # and a second read in the same process sees the same list.
    _save(tmp_path / "x.png", Image.new("RGB", (4, 4)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files_module, "_stdin_read", None)
    monkeypatch.setattr("sys.stdin", io.StringIO("x.png\n"))
    assert resolve_inputs([], file_list="-").paths == [Path("x.png")]
    assert resolve_inputs([], file_list="-").paths == [Path("x.png")]  # Read once, kept.
    with listed_in_a_file("-") as listed:
        assert listed.read_text() == f"{tmp_path / 'x.png'}\n"
        assert resolve_inputs([], file_list=listed).paths == [tmp_path / "x.png"]
    assert not listed.exists()
