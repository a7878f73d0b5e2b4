"""The augmentation preview: the views training makes, on the source training decodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.augment.crop_at_decode import CropAtDecode, view_seed
from simclr_cli.core.choices import Preset
from simclr_cli.core.config import VisualizeConfig
from simclr_cli.core.constants import DEFAULT_MEAN, DEFAULT_STD
from simclr_cli.core.data.decode import decode_for_training, stack_images
from simclr_cli.core.data.loader import TrainImageLoader
from simclr_cli.core.errors import DataError, ImageDecodeError, ModelFileError
from simclr_cli.core.model.files import read_header
from simclr_cli.core.viz.preview import draw_pair, resolve_settings, unnormalize
from tests.core.viz.conftest import make_preview, two_colour_image


def _mixed_folder(root: Path) -> Path:
    """A JPEG larger than the decode bound of 32 px views (decoded in draft mode, then resized)
    and a PNG smaller than it (kept as it is)."""
    root.mkdir()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (200, 300, 3), dtype=torch.uint8, generator=generator)
    Image.fromarray(noise.numpy()).save(root / "photo.jpg", quality=90)
    small = torch.randint(0, 256, (56, 40, 3), dtype=torch.uint8, generator=generator)
    Image.fromarray(small.numpy()).save(root / "small.png")
    return root


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_preview__views_are_the_tensors_training_makes_for_their_seeds(tmp_path: Path, preset: str):
    preview = make_preview(_mixed_folder(tmp_path / "images"), preset=preset, color_strength=0.8)
    assert sorted(tuple(pair.source.shape) for pair in preview.pairs) == [(3, 48, 72), (3, 56, 40)]
    for pair in preview.pairs:
        # The training data path as train/setup.py builds it and train/loop.py calls it, on this
        # image alone, in a run seeded with the pair's seed: the loader decodes (the first
        # epoch; the 200 x 300 photo is larger than 3x the 32 px views, so its views are cut at
        # decode) and then serves the small PNG from the RAM cache (the second epoch), and the
        # augmenter draws from the global generator, which the loop seeds.
        augment = BatchAugmenter(
            preview.settings.preset,
            image_size=32,
            color_strength=0.8,
            device="cpu",
            generator=None,
            mean=DEFAULT_MEAN,
            std=DEFAULT_STD,
        )
        loader = TrainImageLoader(
            [pair.path],
            image_size=32,
            batch_size=1,
            workers=0,
            cache="auto",
            generator=torch.Generator().manual_seed(0),
            cutter=CropAtDecode(augment.recipe),
            seed_of=lambda epoch, index, seed=pair.seed: view_seed(seed, epoch=epoch, index=index),
        )
        large = pair.path.suffix == ".jpg"
        for _ in range(1 if large else 2):
            (batch,) = list(loader)
            assert (batch.cut is not None) == large
            if not large:
                assert torch.equal(batch.images[0], pair.source)
            with torch.random.fork_rng():
                torch.manual_seed(pair.seed)
                views_a, views_b, drawn_params = augment.draw(
                    batch.images, batch.sizes, cut=batch.cut
                )
            assert torch.equal(views_a[0], pair.inputs[0])
            assert torch.equal(views_b[0], pair.inputs[1])
        assert loader.cached != large
        drawn = drawn_params.to_view_params()
        assert tuple(drawn) == pair.params
        expected_size = (200, 300) if large else tuple(pair.source.shape[-2:])
        assert all(params.source_size == expected_size for params in drawn)
        # What is shown is what the network is fed, back in 8 bits.
        assert all(
            torch.equal(view, unnormalize(inputs))
            for view, inputs in zip(pair.views, pair.inputs, strict=True)
        )


def test_draw_pair__same_seed_same_views_and_redraws_match(tmp_path: Path):
    path = two_colour_image(tmp_path / "one.png")
    preview = make_preview(path, pairs=1, image_size=16)
    (pair,) = preview.pairs
    again = draw_pair(path, pair.source, preview.settings, seed=pair.seed)
    assert again.params == pair.params
    assert all(torch.equal(a, b) for a, b in zip(again.inputs, pair.inputs, strict=True))
    images, sizes = stack_images([pair.source])
    views_a, views_b = preview.settings.augmenter(seed=pair.seed)(images, sizes)
    assert torch.equal(views_a[0], pair.inputs[0]) and torch.equal(views_b[0], pair.inputs[1])


def test_unnormalize__gives_back_the_uint8_levels():
    levels = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
    mean = torch.tensor(DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(DEFAULT_STD).view(3, 1, 1)
    assert torch.equal(unnormalize((levels / 255.0 - mean) / std), levels)


def test_preview__to_dict_has_each_pairs_seed_and_parameters(shapes_dir: Path):
    preview = make_preview(shapes_dir, pairs=2)
    data = preview.to_dict()
    assert (data["preset"], data["image_size"], data["seed"]) == ("cifar", 32, 3)
    for pair, record in zip(preview.pairs, data["pairs"], strict=True):
        assert record["seed"] == pair.seed and record["path"] == str(pair.path)
        assert record["views"] == [params.to_dict() for params in pair.params]


def test_create_augmentation_preview__decodes_as_training_does(tmp_path: Path):
    folder = _mixed_folder(tmp_path / "images")
    preview = make_preview(folder / "photo.jpg", pairs=1, image_size=64)
    expected = decode_for_training(folder / "photo.jpg", max_short_side=96)
    assert torch.equal(preview.pairs[0].source, expected)


def test_create_augmentation_preview__single_file_repeats_with_new_views(tmp_path: Path):
    path = two_colour_image(tmp_path / "one.png")
    preview = make_preview(path, pairs=3, image_size=16)
    assert [pair.path for pair in preview.pairs] == [path] * 3
    assert len({pair.params for pair in preview.pairs}) == 3


def test_create_augmentation_preview__folder_pick_is_seeded(shapes_dir: Path):
    first = [pair.path for pair in make_preview(shapes_dir, pairs=3, seed=5).pairs]
    again = [pair.path for pair in make_preview(shapes_dir, pairs=3, seed=5).pairs]
    other = [pair.path for pair in make_preview(shapes_dir, pairs=3, seed=6).pairs]
    assert first == again and first != other and len(set(first)) == 3


def test_create_augmentation_preview__seed_repeats_the_views(shapes_dir: Path):
    first, again = make_preview(shapes_dir, seed=5), make_preview(shapes_dir, seed=5)
    assert [pair.params for pair in first.pairs] == [pair.params for pair in again.pairs]
    assert all(
        torch.equal(a.inputs[0], b.inputs[0]) for a, b in zip(first.pairs, again.pairs, strict=True)
    )


def test_create_augmentation_preview__skips_undecodable_files_in_a_folder(tmp_path: Path):
    two_colour_image(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    preview = make_preview(tmp_path, pairs=2)
    assert [pair.path.name for pair in preview.pairs] == ["good.png"]
    assert [path.name for path in preview.skipped] == ["bad.jpg"]


def test_create_augmentation_preview__bad_inputs(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        make_preview(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        make_preview(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageDecodeError, match="not an image"):
        make_preview(tmp_path / "notes.txt")


def test_preview__strength_and_preset_changes_keep_the_crops(shapes_dir: Path):
    preview = make_preview(shapes_dir, preset="cifar", color_strength=0.5)
    crops = [p.crop for pair in preview.pairs for p in pair.params]
    preview.change_strength(0.1)
    assert preview.settings.color_strength == 0.6
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    preview.next_preset()
    assert preview.settings.preset is Preset.imagenet
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    assert any(p.blur_sigma is not None for pair in preview.pairs for p in pair.params)
    preview.draw()
    assert [p.crop for pair in preview.pairs for p in pair.params] != crops
    for _ in range(30):
        preview.change_strength(0.1)
    assert preview.settings.color_strength == 2.5  # the recipe's bound
    for _ in range(30):
        preview.change_strength(-0.1)
    assert preview.settings.color_strength == 0.0


def test_resolve_settings__flags_then_model_then_defaults(trained_model: Path):
    from_model = resolve_settings(VisualizeConfig(input=Path("."), model=trained_model))
    assert (from_model.preset, from_model.image_size) == (Preset.cifar, 32)
    assert from_model.color_strength == 0.5
    overridden = resolve_settings(
        VisualizeConfig(input=Path("."), model=trained_model, color_strength=1.5)
    )
    assert overridden.color_strength == 1.5 and overridden.preset is Preset.cifar
    plain = resolve_settings(VisualizeConfig(input=Path(".")))
    assert (plain.preset, plain.image_size, plain.color_strength) == (Preset.imagenet, 224, 1.0)


def test_resolve_settings__model_without_augmentation_metadata(trained_model: Path, tmp_path: Path):
    raw = read_header(trained_model)["__metadata__"]
    stripped = {k: v for k, v in raw.items() if k not in ("preset", "color_strength")}
    path = tmp_path / "old.safetensors"
    save_file({"backbone.x": torch.zeros(1)}, str(path), metadata=stripped)
    with pytest.raises(ModelFileError, match="records no augmentation settings"):
        resolve_settings(VisualizeConfig(input=Path("."), model=path))
