"""The plugin system through real pip-installed packages and the real `vqt` CLI."""

import ast
import json

import pytest
from conftest import ROOT, run_vqt

HOOKS = [
    node.name
    for node in ast.parse((ROOT / "vqtoolkit" / "hookspecs.py").read_text()).body
    if isinstance(node, ast.FunctionDef)
]


def plugins_json(*paths, env=None):
    result = run_vqt("plugins", "--all", "--json", pythonpath=paths, env=env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}, result.stderr


def test_builtins_register_through_hooks():
    listing, _ = plugins_json(env={"VQT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    core = listing["vqtoolkit.builtins"]
    assert core["builtin"] is True
    assert set(core["registered"]["bottlenecks"]) == {"vq", "rvq", "fsq", "rfsq", "lfq", "gaussian", "none"}
    assert {"mse", "bce", "l2"} <= set(core["registered"]["losses"])
    assert "image" in listing["vqt_image"]["registered"]["modalities"]


def test_example_plugin_installed_by_pip_shows_up(installed):
    result = run_vqt("plugins", pythonpath=[installed("example")])
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout and "encoders: patch" in result.stdout
    listing, _ = plugins_json(installed("example"))
    assert listing["example"]["registered"] == {"encoders": ["patch"], "decoders": ["patch"]}
    assert listing["example"]["builtin"] is False


def test_example_encoder_used_from_a_recipe_by_name(installed, tmp_path):
    overrides = ["model.encoder.name=patch", "model.decoder.name=patch", "model.encoder.hidden=32"]
    ok = run_vqt("validate", "recipes/image_vqvae.yaml", *overrides, pythonpath=[installed("example")])
    assert ok.returncode == 0, ok.stderr
    missing = run_vqt("validate", "recipes/image_vqvae.yaml", *overrides)
    assert missing.returncode == 1
    assert "model.encoder.name: unknown encoder 'patch'" in missing.stderr
    trained = run_vqt(
        "train",
        "recipes/image_vqvae.yaml",
        *overrides,
        "model.decoder.hidden=32",
        "train.max_steps=3",
        "train.batch_size=8",
        f"train.out_dir={tmp_path / 'run'}",
        "bottleneck.codebook_size=16",
        pythonpath=[installed("example")],
    )
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "name: patch" in (tmp_path / "run" / "config.yaml").read_text()


def test_every_hook_reaches_the_toolkit(installed, tmp_path):
    path = installed("vqt_hooks_all")
    listing, _ = plugins_json(path)
    assert listing["hooks_all"]["registered"] == {
        "modalities": ["signal"],
        "encoders": ["conv1d"],
        "decoders": ["conv1d"],
        "bottlenecks": ["sign"],
        "priors": ["uniform_prior"],
        "losses": ["abs"],
        "metrics": ["peak"],
    }
    hello = run_vqt("hello", "world", pythonpath=[path])  # register_commands
    assert hello.returncode == 0 and hello.stdout.strip() == "hello world from a plugin command"
    recipe = tmp_path / "signal.yaml"
    recipe.write_text(
        "data: {modality: signal, length: 32}\nbottleneck: {name: sign, scale: 0.5}\n"
        "prior: {name: uniform_prior, temperature: 0.7}\nmodel: {latent_dim: 4}\n"
        f"train: {{max_steps: 2, batch_size: 4, out_dir: {tmp_path / 'run'}}}\n"
    )
    assert run_vqt("validate", str(recipe), pythonpath=[path]).returncode == 0
    trained = run_vqt("train", str(recipe), "prior=null", pythonpath=[path])
    assert trained.returncode == 0, trained.stderr
    results = json.loads(trained.stdout)
    assert (
        results["examples"] == 32 and results["peak"] > 0 and results["recon_loss"] > 0
    )  # loss and metric ran
    bad = run_vqt("validate", str(recipe), "prior.temprature=1", pythonpath=[path])
    assert bad.returncode == 1 and "did you mean 'prior.temperature'" in bad.stderr


@pytest.mark.hostile("plugins")
def test_two_plugins_registering_one_name_is_an_error_naming_both(installed):
    result = run_vqt("plugins", pythonpath=[installed("vqt_duplicate")])
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: bottleneck 'vq' is registered by two plugins: 'vqtoolkit.builtins' and 'duplicate'"
    )


@pytest.mark.hostile("plugins")
def test_broken_plugin_is_reported_and_the_others_still_load(installed):
    listing, stderr = plugins_json(installed("vqt_broken"), installed("example"))
    assert "plugin 'broken' failed to load" in stderr and "vqt_module_that_does_not_exist" in stderr
    assert listing["broken"]["error"].startswith("ModuleNotFoundError")
    assert listing["example"]["registered"]["encoders"] == ["patch"]


def test_allow_list_and_disable_autoload(installed):
    paths = [installed("example"), installed("vqt_hooks_all")]
    only_example, _ = plugins_json(*paths, env={"VQT_LOAD_PLUGINS": "example"})
    assert "example" in only_example and "hooks_all" not in only_example
    assert "vqtoolkit.builtins" in only_example  # built-ins always load
    by_distribution, _ = plugins_json(*paths, env={"VQT_LOAD_PLUGINS": "vqt_hooks_all"})
    assert "hooks_all" in by_distribution and "example" not in by_distribution
    none, _ = plugins_json(*paths, env={"VQT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "example" not in none and "hooks_all" not in none and "vqt_image" in none


def test_plugins_table_hides_builtins_without_all(installed):
    result = run_vqt("plugins", env={"VQT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0
    assert "No third-party plugins installed" in result.stdout


def test_every_hook_is_documented():
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    assert len(HOOKS) == 9
    undocumented = [hook for hook in HOOKS if f"`{hook}(" not in docs]
    assert not undocumented, f"hooks missing from docs/: {undocumented}"


def test_every_hookspec_has_a_docstring():
    tree = ast.parse((ROOT / "vqtoolkit" / "hookspecs.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert ast.get_docstring(node), node.name


@pytest.mark.hostile("plugins")
@pytest.mark.parametrize("command", ["plugins", "--help", "validate"])
def test_a_plugin_whose_hooks_raise_is_left_out_by_name_and_every_command_works(installed, command):
    paths = [installed("vqt_raising"), installed("example")]
    if command == "plugins":
        listing, stderr = plugins_json(*paths)
        assert "warning: plugin 'raising' left out: its register_encoders hook raised RuntimeError" in stderr
        assert listing["raising"]["error"].startswith("its register_encoders hook raised RuntimeError")
        assert "registered" not in listing["raising"]
        assert listing["example"]["registered"]["encoders"] == ["patch"]
    elif command == "--help":
        help_ = run_vqt("--help", pythonpath=paths)
        assert help_.returncode == 0 and "train" in help_.stdout and "Traceback" not in help_.stderr
        assert "its register_commands hook raised" in help_.stderr
    else:  # what the hook registered before it raised is left out too
        recipe = run_vqt(
            "validate", "recipes/image_vqvae.yaml", "model.encoder.name=half_registered", pythonpath=paths
        )
        assert recipe.returncode == 1 and "unknown encoder 'half_registered'" in recipe.stderr


@pytest.mark.hostile("plugins")
def test_allowing_a_plugin_that_is_not_installed_is_a_warning(installed):
    listing, stderr = plugins_json(installed("example"), env={"VQT_LOAD_PLUGINS": "example,no_such_plugin"})
    assert (
        "warning: VQT_LOAD_PLUGINS names 'no_such_plugin', which is not an installed vqtoolkit plugin"
        in stderr
    )
    assert listing["example"]["registered"]["encoders"] == ["patch"]
