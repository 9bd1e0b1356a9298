"""A trained flow's latent space: temperature grids, attribute directions, interpolation, folder
ranking (zoo.latents, zoo.anomaly, the manipulate / interpolate / score FOLDER / sample
--temperatures commands), their cache and their errors."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # before huggingface_hub is imported

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import zoo
from zoo import latents
from zoo.anomaly import latent_distances, roc_auc, score_folder
from zoo.cli import main
from zoo.data import FlowDataset
from zoo.errors import DataError, LabelError, ZooError

SIDE = 8


def zoo_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_error(code, err, *needles):
    assert code == 2, err
    assert len([line for line in err.splitlines() if line.startswith("zoo: error:")]) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def perturbed(model, seed=0, scale=0.05):
    """Zero-initialised couplings are the identity; perturb them so the flow does something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model.eval()


def image_model(n_bits=8, preamble=True):
    """A small multi-scale flow on (1, 8, 8) images, untrained but perturbed."""
    layers = ([{"name": "dequantize"}, {"name": "normalize", "scale": 256.0}, {"name": "logit", "alpha": 0.05}]
              if preamble else [])
    layers += [{"name": "squeeze"}, {"name": "affine_coupling", "hidden": 8}, {"name": "split"},
               {"name": "affine_coupling", "hidden": 8}]
    recipe = {"name": "latent_test", "dataset": {"name": "digits"}, "model": {"layers": layers},
              "train": {"epochs": 1}}
    return perturbed(zoo.build_model(recipe, shape=(1, SIDE, SIDE), n_bits=n_bits if preamble else None))


def pixels(n, seed=0):
    return torch.randint(0, 256, (n, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(seed)).float()


# --- a trained run on a folder of two classes -----------------------------------------------------


def bars(k: int) -> np.ndarray:
    image = np.full((SIDE, SIDE), 20, np.uint8)
    image[:, k % SIDE] = 220
    return image


def squares(k: int) -> np.ndarray:
    image = np.full((SIDE, SIDE), 20, np.uint8)
    r = k % (SIDE - 3)
    image[r:r + 3, 2:5] = 220
    return image


def write_pngs(folder: Path, draw, count: int, offset: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"{offset + k:03d}.png"
        Image.fromarray(draw(offset + k), mode="L").save(path)
        paths.append(path)
    return paths


def noise(seed: int):
    generator = np.random.default_rng(seed)
    return lambda k: generator.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)


RECIPE = """\
name: tinyshapes
dataset: {{name: image_folder, root: {root}, size: 8, channels: 1, batch_size: 32}}
model:
  layers:
    - {{name: dequantize}}
    - {{name: normalize, scale: 256.0}}
    - {{name: logit, alpha: 0.05}}
    - {{name: squeeze}}
    - {{name: actnorm}}
    - {{name: affine_coupling, hidden: 16}}
    - {{name: split}}
    - {{name: actnorm}}
    - {{name: affine_coupling, hidden: 16}}
train: {{epochs: 8, lr: 1.0e-2, n_samples: 4}}
"""


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A run trained on 8x8 bars and squares (image_folder classes 'bars' and 'squares')."""
    root = tmp_path_factory.mktemp("shapes")
    write_pngs(root / "data" / "bars", bars, 48)
    write_pngs(root / "data" / "squares", squares, 48)
    (root / "tiny.yaml").write_text(RECIPE.format(root=root / "data"))
    assert main(["run", str(root / "tiny.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture
def run_copy(shapes_run, tmp_path):
    import shutil

    return Path(shutil.copytree(shapes_run, tmp_path / "run"))


# --- encode / decode ------------------------------------------------------------------------------


def test_encode_is_deterministic_and_decode_inverts_it_exactly():
    model = image_model()
    x = pixels(6)
    z1, z2 = latents.encode(model, x), latents.encode(model, x)
    assert z1.shape == (6, SIDE * SIDE) and torch.equal(z1, z2)  # centred dequantization: no noise
    assert torch.equal(latents.decode(model, z1), x)
    assert model.layers[0].noise  # the dequantize layer's own setting is restored


def test_encode_refuses_images_of_another_shape():
    with pytest.raises(ZooError, match=r"do not fit this model.*\(1, 8, 8\)"):
        latents.encode(image_model(), torch.zeros(2, 3, SIDE, SIDE))


# --- temperatures ---------------------------------------------------------------------------------


def test_temperature_grid_has_a_row_per_temperature_and_t0_is_the_same_for_every_seed():
    model = image_model(preamble=False)
    temperatures = [0, 0.5, 1]
    grid = latents.temperature_grid(model, temperatures, n=4, seed=0)
    assert grid.shape == (3, 4, 1, SIDE, SIDE)
    other = latents.temperature_grid(model, temperatures, n=4, seed=1)
    assert torch.equal(grid[0], other[0])  # the mode, whatever the seed
    assert not torch.allclose(grid[2], other[2])  # at T = 1 the seed matters
    assert torch.equal(grid, latents.temperature_grid(model, temperatures, n=4, seed=0))
    # one base noise per column, scaled: the row at T = 0.5 is half way in latent space
    z_half, z_one = latents.encode(model, grid[1]), latents.encode(model, grid[2])
    assert torch.allclose(z_half, z_one / 2, atol=1e-4)


def test_sample_temperatures_writes_one_grid_with_a_row_per_temperature(capsys, shapes_run, tmp_path):
    heights = {}
    for temperatures in ("0,1", "0,0.5,1"):
        out = tmp_path / f"grid{temperatures.count(',')}.png"
        code, stdout, err = zoo_cli(capsys, "sample", shapes_run, "--temperatures", temperatures, "-n", 5, "--out", out)
        assert code == 0, err
        heights[temperatures] = Image.open(out).height
        assert f"{temperatures.count(',') + 1} rows x 5" in stdout
    first = tmp_path / "again.png"
    assert zoo_cli(capsys, "sample", shapes_run, "--temperatures", "0,0.5,1", "-n", 5, "--out", first)[0] == 0
    assert first.read_bytes() == (tmp_path / "grid2.png").read_bytes()  # a fixed seed, the same picture
    row = heights["0,0.5,1"] - heights["0,1"]
    assert row > SIDE and heights["0,1"] > 2 * row - 60  # one more row per temperature


def test_sample_temperatures_refuses_bad_lists(capsys, shapes_run):
    code, _, err = zoo_cli(capsys, "sample", shapes_run, "--temperatures", "0,nan")
    one_clear_error(code, err, "--temperatures", "finite")
    code, _, err = zoo_cli(capsys, "sample", shapes_run, "--temperatures", "0,-1")
    one_clear_error(code, err, ">= 0")


# --- attribute directions -------------------------------------------------------------------------


def shifted_dataset(model, delta, n=40, seed=0, attributes=False):
    """Images whose latents are z0 (without) and z0 + delta (with): the direction is delta."""
    z0 = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    x = latents.decode(model, torch.cat([z0, z0 + delta]))
    if attributes:
        other = torch.randint(0, 2, (2 * n,), generator=torch.Generator().manual_seed(seed + 1))
        y = torch.stack([other, torch.cat([torch.zeros(n), torch.ones(n)]).long()], dim=1)
        names = {"attributes": ("Male", "Smiling")}
    else:
        y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
        names = {"classes": ("plain", "shifted")}
    split = TensorDataset(x, y)
    return FlowDataset(split, split, split, shape=model.shape, **names)


def test_attribute_direction_recovers_a_known_latent_shift():
    model = image_model(preamble=False)
    delta = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(5))
    dataset = shifted_dataset(model, delta)
    direction = zoo.attribute_direction(model, dataset, "shifted")
    assert (direction.positives, direction.negatives) == (40, 40)
    assert torch.allclose(direction.delta, delta, atol=1e-4)
    assert torch.allclose(zoo.attribute_direction(model, dataset, "plain").delta, -delta, atol=1e-4)
    assert torch.allclose(zoo.attribute_direction(model, dataset, "shifted", against="plain").delta, delta, atol=1e-4)


def test_binary_attribute_direction_by_name_any_case_or_index():
    model = image_model(preamble=False)
    delta = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(6))
    dataset = shifted_dataset(model, delta, attributes=True)
    for name in ("Smiling", "smiling", 1):
        assert torch.allclose(zoo.attribute_direction(model, dataset, name).delta, delta, atol=1e-4)
    male = zoo.attribute_direction(model, dataset, "Male").delta  # random: not the shift
    assert torch.nn.functional.cosine_similarity(male, delta, dim=0) < 0.9


def test_manipulate_moves_the_latent_by_alpha_times_the_direction():
    model = image_model()
    image = pixels(1, seed=3)[0]
    delta = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(7))
    strip = zoo.manipulate(model, image, delta, [0, 1, 2])
    assert strip.shape == (3, 1, SIDE, SIDE)
    assert torch.equal(strip[0], image)  # alpha 0: the image itself
    assert not torch.equal(strip[1], image) and not torch.equal(strip[1], strip[2])


def test_unknown_attribute_lists_the_known_ones():
    model = image_model(preamble=False)
    dataset = shifted_dataset(model, torch.ones(model.latent_dim))
    with pytest.raises(LabelError, match=r"no class 'shfted'.*Did you mean 'shifted'.*'plain', 'shifted'"):
        zoo.attribute_direction(model, dataset, "shfted")
    with pytest.raises(LabelError, match=r"no class '7'.*index 0..1"):
        zoo.attribute_direction(model, dataset, 7)
    with pytest.raises(LabelError, match="same class"):
        zoo.attribute_direction(model, dataset, "plain", against="plain")
    attributes = shifted_dataset(model, torch.ones(model.latent_dim), attributes=True)
    with pytest.raises(LabelError, match="--from names a class"):
        zoo.attribute_direction(model, attributes, "Smiling", against="Male")


def test_a_data_set_without_labels_cannot_give_a_direction():
    model = image_model(preamble=False)
    split = TensorDataset(torch.zeros(4, 1, SIDE, SIDE))
    dataset = FlowDataset(split, split, split, shape=model.shape)
    with pytest.raises(LabelError, match="has no labels.*labelled data set"):
        zoo.attribute_direction(model, dataset, "Smiling")


def test_a_class_missing_from_the_examples_says_to_raise_examples():
    model = image_model(preamble=False)
    dataset = shifted_dataset(model, torch.ones(model.latent_dim))  # 40 plain, then 40 shifted
    assert latents.example_indices(80, 3).tolist() == [0, 40, 79]  # spread over the split
    assert latents.example_indices(5, 30).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(LabelError, match="none of the 1 training images used is 'shifted'.*--examples"):
        zoo.attribute_direction(model, dataset, "shifted", examples=1)


# --- the latent cache -----------------------------------------------------------------------------


def test_training_latents_are_cached_and_a_stale_cache_is_never_used(tmp_path, monkeypatch):
    model = image_model(preamble=False)
    dataset = shifted_dataset(model, torch.ones(model.latent_dim))
    cache = tmp_path / "latents.safetensors"
    z, labels = latents.training_latents(model, dataset, 30, cache)
    assert cache.is_file() and z.shape == (30, model.latent_dim) and labels.shape == (30,)

    calls = []
    real = latents.encode
    monkeypatch.setattr(latents, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, _ = latents.training_latents(model, dataset, 30, cache)
    assert not calls and torch.equal(again, z)  # read from the cache
    latents.training_latents(model, dataset, 20, cache)
    assert calls  # other images: computed
    calls.clear()
    z = latents.training_latents(model, dataset, 20, cache)[0]
    assert not calls
    whole, _ = latents.training_latents(model, dataset, 80, cache)  # the whole split
    assert calls and torch.equal(whole[latents.example_indices(80, 20)], z)
    calls.clear()
    assert torch.equal(latents.training_latents(model, dataset, 20, cache)[0], z) and not calls  # from the whole

    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # other weights: the cache is stale
    fresh, _ = latents.training_latents(model, dataset, 20, cache)
    assert calls and not torch.allclose(fresh, z)
    calls.clear()
    assert torch.equal(latents.training_latents(model, dataset, 20, cache)[0], fresh) and not calls

    other = shifted_dataset(model, torch.ones(model.latent_dim), seed=9)  # other data: stale too
    latents.training_latents(model, other, 20, cache)
    assert calls
    calls.clear()
    cache.write_bytes(b"not a safetensors file")  # damaged: computed again and rewritten
    assert torch.equal(latents.training_latents(model, other, 20, cache)[0], latents.training_latents(model, other, 20)[0])
    assert calls


def test_manipulate_caches_latents_in_the_run_folder(capsys, run_copy, tmp_path):
    out = tmp_path / "m.png"
    code, stdout, err = zoo_cli(capsys, "manipulate", run_copy, "--attribute", "squares", "--from", "bars", "--out", out)
    assert code == 0, err
    assert "encoding" in stdout and (run_copy / "latents.safetensors").is_file()
    assert "bars -> squares" in stdout and Image.open(out).width > 6 * SIDE
    code, stdout, err = zoo_cli(capsys, "manipulate", run_copy, "--attribute", "squares", "--from", "bars", "--out", out)
    assert code == 0 and "encoding" not in stdout  # the second call reads the cache


def test_manipulate_errors_are_clear(capsys, run_copy, tmp_path):
    code, _, err = zoo_cli(capsys, "manipulate", run_copy, "--attribute", "circles")
    one_clear_error(code, err, "no class 'circles'", "'bars', 'squares'")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = zoo_cli(capsys, "manipulate", run_copy, "--attribute", "bars", "--image", bad)
    one_clear_error(code, err, "bad.png", "not a readable image")
    code, _, err = zoo_cli(capsys, "manipulate", run_copy, "--attribute", "bars", "--alphas", "1,x")
    one_clear_error(code, err, "--alphas")


def test_manipulate_an_unlabelled_density_model_is_a_clear_error(capsys, tmp_path):
    write_pngs(tmp_path / "flat", bars, 12)  # no sub-folders: no classes
    recipe = tmp_path / "flat.yaml"
    recipe.write_text(RECIPE.format(root=tmp_path / "flat").replace("epochs: 8", "epochs: 1, max_steps_per_epoch: 1"))
    assert zoo_cli(capsys, "run", recipe, "--out", tmp_path / "run", "--no-progress")[0] == 0
    code, _, err = zoo_cli(capsys, "manipulate", tmp_path / "run", "--attribute", "bars")
    one_clear_error(code, err, "has no labels", "image_folder")


# --- interpolation --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["linear", "slerp"])
def test_interpolation_ends_are_the_two_images(path):
    model = image_model()
    a, b = pixels(2, seed=4)
    strip = zoo.interpolate(model, a, b, steps=6, path=path)
    assert strip.shape == (6, 1, SIDE, SIDE)
    assert torch.equal(strip[0], a) and torch.equal(strip[-1], b)  # the exact inverse
    assert not torch.equal(strip[2], a) and not torch.equal(strip[2], b)


def test_slerp_keeps_the_ends_and_interpolates_the_norm():
    za, zb = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    path = latents.latent_path(za, zb, 3, "slerp")
    assert torch.equal(path[0], za) and torch.equal(path[-1], zb)
    assert path[1].norm() == pytest.approx(2.0) and path[1][0] / path[1][1] == pytest.approx(1.0)
    assert torch.allclose(latents.latent_path(za, zb, 3, "linear")[1], torch.tensor([1.5, 0.5]))
    with pytest.raises(ZooError, match="linear or slerp"):
        latents.latent_path(za, zb, 3, "spline")


def test_interpolate_command_writes_the_strip_and_says_what_it_resized(capsys, shapes_run, tmp_path):
    a = write_pngs(tmp_path / "a", bars, 1)[0]
    b = tmp_path / "b.png"
    Image.fromarray(np.repeat(squares(1)[:, :, None], 3, axis=2).repeat(2, 0).repeat(2, 1)).save(b)  # 16x16 RGB
    out = tmp_path / "strip.png"
    code, stdout, err = zoo_cli(capsys, "interpolate", shapes_run, a, b, "--steps", 5, "--path", "slerp", "--out", out)
    assert code == 0, err
    assert "b.png: resized from 16x16 to 8x8 and converted from RGB to grey" in err
    assert "a.png" not in err  # the right size and mode: nothing to say
    assert out.is_file() and "5 images, slerp" in stdout
    code, _, err = zoo_cli(capsys, "interpolate", shapes_run, a, b, "--steps", 1)
    one_clear_error(code, err, "--steps 1")
    not_image = tmp_path / "c.png"
    not_image.write_bytes(b"\x00" * 20)
    code, _, err = zoo_cli(capsys, "interpolate", shapes_run, a, not_image)
    one_clear_error(code, err, "c.png", "not a readable image")


# --- ranking a folder -----------------------------------------------------------------------------


def test_roc_auc_against_hand_checked_cases():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 pairs ordered right
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie counts half: positive 1 vs negatives 1 and 2 -> (0.5 + 0) / 2
    assert roc_auc(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1, 0, 0])) == pytest.approx(0.25)
    assert roc_auc(torch.tensor([5.0, 6.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0
    assert np.isnan(roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))


def test_latent_distance_is_measured_in_the_reference_pca_space():
    reference = torch.zeros(100, 3)
    reference[:, 0] = torch.linspace(-5, 5, 100)  # all spread along the first axis
    reference[:, 1] = torch.linspace(-1, 1, 100) * 0.01
    z = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    distance, used = latent_distances(z, reference, components=1)
    assert used == 1 and torch.allclose(distance, torch.tensor([4.0, 0.0]), atol=1e-4)  # the third axis is ignored
    distance, used = latent_distances(z, None)
    assert used == 0 and torch.allclose(distance, torch.tensor([4.0, 9.0]))


def scored_folder(root: Path) -> Path:
    write_pngs(root / "usual", bars, 10, offset=100)
    write_pngs(root / "usual", squares, 10, offset=200)
    write_pngs(root / "noise", noise(0), 5)
    (root / "notes.txt").write_text("not an image: skipped")
    return root


def test_noise_images_rank_as_the_most_unusual(shapes_run, tmp_path):
    from zoo import assemble
    from zoo.runs import open_model

    recipe, model = open_model(shapes_run)
    reference, _ = latents.training_latents(model, assemble.build_dataset(recipe), 1000)
    result = score_folder(model, scored_folder(tmp_path / "mixed"), reference, components=20)
    assert len(result.files) == 25 and result.components == 20
    assert any("skipped 1 files" in n for n in result.notices)
    top = result.rank("bits_per_dim").argsort()[:5].tolist()
    assert {result.classes[i] for i in top} == {"noise"}
    auc = result.auc()
    assert auc["noise"]["bits_per_dim"] == 1.0 and auc["noise"]["latent_distance"] > 0.9
    assert auc["usual"]["bits_per_dim"] == 0.0  # the same split seen from the other side
    again = score_folder(model, tmp_path / "mixed", reference, components=20)
    assert torch.equal(again.bits_per_dim, result.bits_per_dim)  # seeded dequantization noise


def test_score_folder_command_writes_csv_strip_and_auc(capsys, run_copy, tmp_path):
    import csv
    import json

    folder = scored_folder(tmp_path / "mixed")
    Image.new("RGB", (12, 10), (250, 10, 10)).save(folder / "usual" / "red.png")
    out = tmp_path / "scores"
    code, stdout, err = zoo_cli(capsys, "score", run_copy, folder, "--outlier", "noise", "--components", 10, "-k", 3,
                                "--out", out)
    assert code == 0, err
    assert "1 of 26 images resized from 12x10 to 8x8" in err and "converted from RGB to grey" in err
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 26 and [int(r["rank"]) for r in rows] == list(range(1, 27))
    assert {r["class"] for r in rows[:5]} <= {"noise", "usual"} and rows[0]["file"].startswith(("noise/", "usual/red"))
    assert all(float(a["bits_per_dim"]) >= float(b["bits_per_dim"]) for a, b in zip(rows, rows[1:]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 26 and summary["pca_components"] == 10 and summary["seconds_per_image"] > 0
    assert summary["auc"]["noise"]["bits_per_dim"] > 0.9
    assert "ROC AUC, 'noise' vs the rest" in stdout and "'usual' vs" not in stdout
    assert Image.open(out / "scores.png").height > 4 * 3 * SIDE  # four rows of tiles
    assert (run_copy / "latents.safetensors").is_file()


def test_score_folder_errors_are_clear(capsys, run_copy, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, _, err = zoo_cli(capsys, "score", run_copy, tmp_path / "empty")
    one_clear_error(code, err, "no images", "empty")
    folder = scored_folder(tmp_path / "mixed")
    code, _, err = zoo_cli(capsys, "score", run_copy, folder, "--outlier", "cats")
    one_clear_error(code, err, "--outlier 'cats'", "'noise', 'usual'")
    (folder / "usual" / "broken.png").write_text("no pixels here")
    code, _, err = zoo_cli(capsys, "score", run_copy, folder)
    one_clear_error(code, err, "broken.png", "not a readable image")
    code, _, err = zoo_cli(capsys, "score", run_copy, folder, folder / "noise" / "000.png")
    one_clear_error(code, err, "is a folder")
    with pytest.raises(DataError, match="no such folder"):
        score_folder(image_model(), tmp_path / "missing")


def test_score_files_say_what_they_resized(capsys, shapes_run, tmp_path):
    picture = tmp_path / "odd.png"
    Image.new("RGB", (12, 10), (250, 10, 10)).save(picture)
    code, out, err = zoo_cli(capsys, "score", shapes_run, picture)
    assert code == 0 and "bits/dim" in out
    assert "odd.png: resized from 12x10 to 8x8 and converted from RGB to grey" in err


# --- a pulled model works the same ----------------------------------------------------------------


@pytest.fixture
def pulled(shapes_run, tmp_path, monkeypatch):
    """The shapes run pushed to the Hub stand-in, and a fresh cache to pull it into."""
    from huggingface_hub import constants

    from fakehub import FakeHub
    from zoo import hub

    with FakeHub() as server:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_fake")
        monkeypatch.setenv("ZOO_HUB_ENDPOINT", server.endpoint)
        monkeypatch.setenv("ZOO_HUB_TIMEOUT", "3")
        monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo_cache"))
        hub.push(shapes_run, "zoo-test/tiny-shapes")
        yield "zoo-test/tiny-shapes"


def test_a_pulled_model_manipulates_interpolates_and_scores(capsys, pulled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = zoo_cli(capsys, "manipulate", pulled, "--attribute", "squares", "--alphas", "0,1")
    assert code == 0, err
    assert Path("manipulate_towards_squares.png").is_file()
    assert list((tmp_path / "zoo_cache" / "latents").glob("*.safetensors"))  # not in the Hub's cache
    a, b = write_pngs(tmp_path / "pair", bars, 2)
    code, stdout, err = zoo_cli(capsys, "interpolate", pulled, a, b, "--steps", 3)
    assert code == 0, err and Path("interpolate_000_001_linear.png").is_file()
    code, stdout, err = zoo_cli(capsys, "score", pulled, scored_folder(tmp_path / "mixed"), "--outlier", "noise")
    assert code == 0, err
    assert (tmp_path / "scores-mixed" / "scores.csv").is_file() and "ROC AUC" in stdout
    code, stdout, err = zoo_cli(capsys, "sample", pulled, "--temperatures", "0,1", "-n", 2)
    assert code == 0 and Path("sample_temperatures.png").is_file()


def test_manipulate_celeba_attributes_by_name(capsys, tmp_path, monkeypatch):
    """CelebA's attribute file gives the names; --from is for classes only."""
    from data_writers import write_celeba

    write_celeba(tmp_path / "data" / "celeba")
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    recipe = tmp_path / "faces.yaml"
    recipe.write_text("""\
name: tinyfaces
dataset: {name: celeba, size: 32, batch_size: 2}
model:
  layers:
    - {name: dequantize}
    - {name: normalize, scale: 32.0}
    - {name: logit, alpha: 0.05}
    - {name: squeeze}
    - {name: affine_coupling, hidden: 4}
train: {epochs: 1, max_steps_per_epoch: 1, n_samples: 2}
""")
    assert zoo_cli(capsys, "run", recipe, "--out", tmp_path / "run", "--no-progress")[0] == 0
    out = tmp_path / "smile.png"
    code, stdout, err = zoo_cli(capsys, "manipulate", tmp_path / "run", "--attribute", "smiling", "--alphas", "0,1.6",
                                "--out", out)
    assert code == 0, err
    assert "towards Smiling" in stdout and out.is_file()
    from zoo._figure import text_size

    assert Image.open(out).width > text_size("tinyfaces: towards Smiling, z + alpha dz", 15)[0]  # the title fits
    code, _, err = zoo_cli(capsys, "manipulate", tmp_path / "run", "--attribute", "Smilng")
    one_clear_error(code, err, "no attribute 'Smilng'", "Did you mean 'Smiling'", "'5_o_Clock_Shadow'")
    code, _, err = zoo_cli(capsys, "manipulate", tmp_path / "run", "--attribute", "Smiling", "--from", "Male")
    one_clear_error(code, err, "--from names a class")


def test_a_conditional_flow_draws_its_temperature_grid_but_has_no_single_latent_space(capsys, tmp_path):
    write_pngs(tmp_path / "data" / "bars", bars, 8)
    write_pngs(tmp_path / "data" / "squares", squares, 8)
    recipe = tmp_path / "cond.yaml"
    recipe.write_text(RECIPE.format(root=tmp_path / "data").replace("epochs: 8", "epochs: 1, max_steps_per_epoch: 1")
                      + "context: {type: class}\n")
    assert zoo_cli(capsys, "run", recipe, "--out", tmp_path / "run", "--no-progress")[0] == 0
    out = tmp_path / "grid.png"
    code, _, err = zoo_cli(capsys, "sample", tmp_path / "run", "--context", "squares", "--temperatures", "0,1",
                           "-n", 2, "--out", out)
    assert code == 0 and out.is_file(), err
    code, _, err = zoo_cli(capsys, "manipulate", tmp_path / "run", "--attribute", "bars")
    one_clear_error(code, err, "is a conditional model", "--context")
