"""Recipes: YAML onto dataclasses, dotted overrides, and one-line errors naming key and fix."""

import dataclasses
import re

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, run_vqt
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtoolkit.cli import cli
from vqtoolkit.config import Component, Recipe, RecipeError, dump_recipe, load_recipe, parse_recipe

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_validates(recipe):
    result = run_vqt("validate", str(recipe.relative_to(ROOT)))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"{re.escape(str(recipe.relative_to(ROOT)))}: ok( \(\d+\.\d\d M parameters\))?",
        result.stdout.strip(),
    )


def test_recipes_exist_for_each_kind():
    kinds = {"image_vqvae", "image_vae", "image_ae", "speech_vqvae", "speech_vqvae_paper", "video_vqvae"}
    assert kinds | {"image_prior", "speech_prior", "video_prior"} <= {p.stem for p in RECIPES}


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-4\n  weight_decay: 2E-2\n")
    loaded = load_recipe(recipe, ["optim.warmup_steps=10", "optim.grad_clip=5e-1"])
    assert (loaded.optim.lr, loaded.optim.weight_decay, loaded.optim.grad_clip) == (1e-4, 2e-2, 0.5)


def test_yaml_maps_onto_dataclasses_with_overrides():
    recipe = load_recipe(
        ROOT / "recipes/image_vqvae.yaml",
        [
            "train.max_steps=7",
            "data.path=/data/x",
            "optim.betas=[0.5, 0.9]",
            "model.encoder.hidden=32",
            "train.device=cpu",
            "train.seed=3",
            "train.batch_size=5",
            "train.out_dir=runs/x",
        ],
    )
    assert isinstance(recipe, Recipe)
    assert (recipe.train.max_steps, recipe.train.batch_size, recipe.train.seed) == (7, 5, 3)
    assert (recipe.train.device, recipe.train.out_dir, recipe.data.path) == ("cpu", "runs/x", "/data/x")
    assert recipe.optim.betas == (0.5, 0.9)
    assert recipe.model.encoder == Component("vqvae2d", {"hidden": 32, "res_blocks": 2})
    assert recipe.data.options == {"size": [28, 28], "multiple": 4}


def test_resolved_recipe_round_trips():
    recipe = load_recipe(ROOT / "recipes/image_vae.yaml", ["bottleneck.kl_weight=0.5"])
    again = parse_recipe(yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe


def test_component_shorthand_and_override_into_it():
    recipe = parse_recipe({"bottleneck": "gaussian"}, ["bottleneck.kl_weight=2"])
    assert recipe.bottleneck == Component("gaussian", {"kl_weight": 2})


@pytest.mark.hostile("recipe values")
@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=3", "train.max_step: unknown key (did you mean 'train.max_steps'?)"),
        ("trian.seed=1", "trian: unknown key (did you mean 'train'?)"),
        ("train.max_steps=many", "train.max_steps: expected an integer >= 1, got string 'many'"),
        ("train.max_steps=2.5", "train.max_steps: expected an integer >= 1, got number 2.5"),
        ("train.max_steps=-1", "train.max_steps: expected an integer >= 1, got integer -1"),
        ("train.max_steps=true", "train.max_steps: expected an integer >= 1, got boolean True"),
        ("train.batch_size=0", "train.batch_size: expected an integer >= 1, got integer 0"),
        ("train.log_every=0", "train.log_every: expected an integer >= 1, got integer 0"),
        ("optim.lr=.nan", "optim.lr: expected a number > 0, got number nan"),
        ("optim.lr=true", "optim.lr: expected a number > 0, got boolean True"),
        ("bottleneck.beta=false", "bottleneck.beta: expected a number >= 0, got boolean False"),
        ("optim.lr=-0.001", "optim.lr: expected a number > 0, got number -0.001"),
        ("optim.betas=[0.9,1.0]", "optim.betas: expected a list of 2 numbers in [0, 1), got list [0.9, 1.0]"),
        (
            "optim.betas=[-0.1,0.9]",
            "optim.betas: expected a list of 2 numbers in [0, 1), got list [-0.1, 0.9]",
        ),
        ("model.latent_dim=0", "model.latent_dim: expected an integer in [1, 1048576], got integer 0"),
        (
            "bottleneck.codebook_size=0",
            "bottleneck.codebook_size: expected an integer in [1, 16777216], got integer 0",
        ),
        ("bottleneck.decay=1", "bottleneck.decay: expected a number in [0, 1), got integer 1"),
        (
            "model.encoder.hidden=-3",
            "model.encoder.hidden: expected an integer in [1, 1048576], got integer -3",
        ),
        ("train.collapse_warning=2", "train.collapse_warning: expected a number in [0, 1], got integer 2"),
        ("data.num_workers=-2", "data.num_workers: expected an integer >= 0, got integer -2"),
        ("train.device=gpu", "train.device: unknown device 'gpu' (auto, cpu, cuda, cuda:N, mps)"),
        # found by fuzzing: options given to a loss that takes none; a count that would loop for ever
        ("model.loss.extra=1", "model.loss.extra: unknown key"),
        ("model.decoder.res_blocks=9223372036854775808", "expected an integer in [0, 4096]"),
        ("bottleneck.codebook_size=100000000", "expected an integer in [1, 16777216]"),
        ("train.device=cuda:x", "train.device: unknown device 'cuda:x'"),
        ("model.encoder.hidden=200000", "parameters, about 26822 GB to train"),
        ("model.latent_dim=100000000", "model.latent_dim: expected an integer in [1, 1048576]"),
        ("model.encoder.hidden=100000", "GB to train (fp32 weights, gradients and AdamW moments)"),
        ("train.compile=3", "train.compile: expected true or false, got integer 3"),
        ("train.precision=fp16", "train.precision: expected one of 'fp32', 'bf16', got string 'fp16'"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 numbers in [0, 1), got list [0.9]"),
        (
            "bottleneck.codebook_sise=8",
            "bottleneck.codebook_sise: unknown key (did you mean 'bottleneck.codebook_size'?)",
        ),
        ("bottleneck.beta=high", "bottleneck.beta: expected a number >= 0, got string 'high'"),
        (
            "bottleneck.name=gausian",
            "bottleneck.name: unknown bottleneck 'gausian' (did you mean 'gaussian'?)",
        ),
        (
            "model.encoder.name=vqvae_2d",
            "model.encoder.name: unknown encoder 'vqvae_2d' (did you mean 'vqvae2d'?)",
        ),
        ("model.encoder.hiden=8", "model.encoder.hiden: unknown key (did you mean 'model.encoder.hidden'?)"),
        ("model.loss.name=bcee", "model.loss.name: unknown loss 'bcee' (did you mean 'bce'?)"),
        ("data.modality=imag", "unknown modality 'imag' (did you mean 'image'?)"),
        ("data.size=32", "data.size: expected a list of integers, got integer 32"),
        ("nodots", "override 'nodots': expected dotted.key=value"),
    ],
)
def test_bad_recipes_give_one_clear_line(override, message):
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes/image_vqvae.yaml"), override])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_errors_in_the_file_give_the_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data:\n  modality: image\ntrain:\n  max_steps: 10\n  batch_szie: 4\n")
    result = run_vqt("validate", str(recipe))
    assert result.returncode == 1
    assert f"{recipe}:5: train.batch_szie: unknown key (did you mean 'train.batch_size'?)" in result.stderr
    recipe.write_text("data: [unclosed\n")
    result = run_vqt("validate", str(recipe))
    assert result.returncode == 1 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr
    missing = run_vqt("validate", str(tmp_path / "none.yaml"))
    assert missing.returncode != 0 and "none.yaml" in missing.stderr and "Traceback" not in missing.stderr


def test_debug_shows_the_traceback():
    result = run_vqt("--debug", "validate", "recipes/image_vqvae.yaml", "train.max_step=1")
    assert result.returncode != 0 and "Traceback" in result.stderr


def _keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            yield from _keys(f.type, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


@settings(max_examples=60, deadline=None)
@given(
    section=st.sampled_from(["train", "optim", "data"]),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none()),
)
def test_parser_never_crashes_and_never_accepts_unknown_keys(section, key, value):
    try:
        recipe = parse_recipe({section: {key: value}})
    except RecipeError as exc:
        assert str(exc).startswith("<recipe>") and "\n" not in str(exc)
        return
    if section == "data":  # unknown data keys go to the modality's dataset, checked later
        assert key in recipe.data.options or hasattr(recipe.data, key)
    else:
        assert getattr(getattr(recipe, section), key) == value


def test_choosing_another_component_drops_the_old_components_options():
    path = ROOT / "recipes/image_vqvae.yaml"
    recipe = load_recipe(path, ["bottleneck.kl_weight=0.5", "bottleneck.name=gaussian"], check=False)
    assert recipe.bottleneck == Component("gaussian", {"kl_weight": 0.5})
    same = load_recipe(path, ["bottleneck.name=vq", "bottleneck.codebook_size=16"])
    assert same.bottleneck.args["beta"] == 0.25 and same.bottleneck.args["codebook_size"] == 16


def test_plugin_factories_declare_ranges_with_annotated():
    from typing import Annotated

    from vqtoolkit.config import check_options
    from vqtoolkit.ranges import Range

    def encoder(in_channels, latent_dim, hidden: Annotated[int, Range(1)] = 64,
                dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0):  # fmt: skip
        return None

    check_options(encoder, {"hidden": 8, "dropout": 0.5}, "model.encoder")
    for options, message in (
        ({"hidden": 0}, "model.encoder.hidden: expected an integer >= 1, got integer 0"),
        ({"dropout": 1.0}, "model.encoder.dropout: expected a number in [0, 1), got number 1.0"),
        ({"dropout": float("nan")}, "model.encoder.dropout: expected a number in [0, 1), got number nan"),
    ):
        with pytest.raises(RecipeError, match=re.escape(message)):
            check_options(encoder, options, "model.encoder")


def test_ranges_by_hand():
    from vqtoolkit.ranges import Range

    assert Range(0, low_open=True).holds(1e-9) and not Range(0, low_open=True).holds(0)
    assert Range(0, 1, high_open=True).holds(0) and not Range(0, 1, high_open=True).holds(1)
    assert Range(1).holds(1) and not Range(1).holds(0.999) and not Range().holds(float("nan"))
    assert Range(high=5).describe() == "<= 5" and Range(0, 1).describe() == "in [0, 1]"
