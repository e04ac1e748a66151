"""Recipes: YAML -> typed dataclasses, dotted overrides, and errors that name the key and the fix."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from vqtoolkit.errors import VQTError, closest
from vqtoolkit.ranges import AT_LEAST_ONE, BETA, FRACTION, NOT_NEGATIVE, POSITIVE, WIDTH, Range


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML reads `1e-4` (no dot) as a string, which no recipe author means."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)  # fmt: skip


@dataclass
class Component:
    """A registered component chosen by name; every other key is a keyword argument of its factory."""

    name: str = ""  # "" = the modality's default
    args: dict[str, Any] = field(default_factory=dict)  # the other keys of the mapping: factory options


@dataclass
class DataConfig:
    modality: str = "image"  # a registered modality: speech, image, video, or one a plugin adds
    path: str = ""  # a file, a folder or a dataset file; "" = the small sample that ships with the modality
    eval_path: str = ""  # held-out data; "" = the held-out split of `path` (its test files, or its last 10%)
    channels: Annotated[int, Range(1, 64)] = 1  # 1 = grey / mono, 3 = RGB
    num_workers: Annotated[int, NOT_NEGATIVE] = 0  # DataLoader worker processes
    # priors: train on this code dataset (`vqt tokenize DIR --dataset OUT`) instead of tokenizing `path`
    codes: str = ""
    # ... in windows of this many steps along the code grid's first axis (0 = whole items, of one grid)
    codes_window: Annotated[int, NOT_NEGATIVE] = 0
    options: dict[str, Any] = field(default_factory=dict)  # other keys go to the modality's dataset


@dataclass
class ModelConfig:
    encoder: Component = field(default_factory=Component)  # media -> latent grid
    decoder: Component = field(default_factory=Component)  # latent grid -> media
    loss: Component = field(default_factory=Component)  # reconstruction loss
    latent_dim: Annotated[int, WIDTH] = 64  # channels of the latent grid = code vector size


@dataclass
class OptimConfig:
    lr: Annotated[float, POSITIVE] = 2e-4  # peak learning rate of AdamW
    weight_decay: Annotated[float, NOT_NEGATIVE] = 0.0  # AdamW weight decay
    betas: tuple[Annotated[float, BETA], Annotated[float, BETA]] = (0.9, 0.999)  # AdamW betas
    grad_clip: Annotated[float, NOT_NEGATIVE] = 1.0  # max gradient norm; 0 = off
    schedule: Literal["constant", "cosine"] = "cosine"  # cosine: decays to 0 at train.max_steps
    # linear warm-up from 0 over this many steps (cosine: at most a tenth of train.max_steps)
    warmup_steps: Annotated[int, NOT_NEGATIVE] = 0


@dataclass
class TrainConfig:
    # optimisation steps; `vqt train --resume RUN train.max_steps=N` extends a run
    max_steps: Annotated[int, AT_LEAST_ONE] = 1000
    # examples per step (over all processes when training data-parallel)
    batch_size: Annotated[int, AT_LEAST_ONE] = 32
    device: str = "auto"  # auto = cuda when present, else cpu
    out_dir: str = "runs/run"  # the run directory: config, weights, metrics, pictures, checkpoint
    seed: int = 0  # seeds the model initialisation and the data order
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast applies on CUDA only
    # CPU threads for torch; 0 = OMP_NUM_THREADS, else the free cores (`vqt --threads`)
    threads: Annotated[int, NOT_NEGATIVE] = 0
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # channels-last memory format for images and video (faster on GPUs)
    log_every: Annotated[int, AT_LEAST_ONE] = 10  # steps between records in metrics.jsonl
    eval_every: Annotated[int, NOT_NEGATIVE] = 0  # 0 = only at the end
    # steps between reconstruction pictures recon_*.png; 0 = only at the end
    picture_every: Annotated[int, NOT_NEGATIVE] = 200
    # steps between resumable checkpoints; 0 = at the end
    checkpoint_every: Annotated[int, NOT_NEGATIVE] = 200
    # steps between copies of the weights kept as snapshots/model_<step>.safetensors (for learning
    # curves); 0 = none
    snapshot_every: Annotated[int, NOT_NEGATIVE] = 0
    eval_batches: Annotated[int, NOT_NEGATIVE] = 0  # 0 = the whole held-out split
    # A step whose loss (or gradient) is NaN or inf is skipped; this many in a row are tolerated (a bad batch
    # or two), one more stops training as diverged. 0 = stop at the first.
    max_bad_steps: Annotated[int, NOT_NEGATIVE] = 10
    # Warn when a step's batch uses under this fraction of the codebook after the first 10% of training
    # (a collapsed codebook: most codes dead). 0 = never.
    collapse_warning: Annotated[float, FRACTION] = 0.05


@dataclass
class AdversarialConfig:
    """Adversarial training: discriminators against the decoder's output, with their own optimizer."""

    # registered discriminators (mpd, mrstft, patch, ...); their verdicts are pooled into one loss
    discriminators: list[Component] = field(default_factory=list)
    loss: Literal["hinge", "lsgan"] = "hinge"  # hinge (MelGAN, DAC... EnCodec) or least squares (HiFi-GAN)
    weight: Annotated[float, NOT_NEGATIVE] = 1.0  # of the generator's adversarial loss
    # of feature matching: L1 between the discriminators' maps of real and fake
    feature_weight: Annotated[float, NOT_NEGATIVE] = 2.0
    # steps of reconstruction loss alone before the discriminators
    start_step: Annotated[int, NOT_NEGATIVE] = 0
    # the discriminators' optimizer (AdamW) and schedule; its warm-up counts from start_step
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-4, betas=(0.8, 0.99), grad_clip=10.0)
    )


@dataclass
class EvalConfig:
    # registered metrics (`vqt plugins --all` lists them) evaluated besides the modality's own
    metrics: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)  # what to train and evaluate on
    model: ModelConfig = field(default_factory=ModelConfig)  # the encoder, decoder and loss
    bottleneck: Component = field(default_factory=lambda: Component("vq"))  # vq, rvq, gaussian, none, ...
    optim: OptimConfig = field(default_factory=OptimConfig)  # the optimizer (AdamW) and its schedule
    train: TrainConfig = field(default_factory=TrainConfig)  # the training loop and the run directory
    prior: Component | None = None  # prior recipes: the prior over the codes (default pixelcnn)
    tokenizer: str = ""  # prior recipes: the trained VQ-VAE run whose codes the prior models
    adversarial: AdversarialConfig | None = None  # adversarial training (GAN losses); None = off
    eval: EvalConfig = field(default_factory=EvalConfig)  # held-out evaluation


class RecipeError(VQTError):
    pass


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] = (), check: bool = True) -> Recipe:
    path = Path(path)
    try:
        with open(path, "rb") as file:  # a bounded read: the path could be /dev/zero or a huge file
            data = file.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES // 2**20} MB; not a recipe")
        text = data.decode("utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not UTF-8)"
        ) from None
    try:
        node = yaml.compose(text, Loader=_YAMLLoader)
        _check_node(node, path)  # before constructing: aliases and nesting could make it huge or deep
        raw = yaml.load(text, Loader=_YAMLLoader)
        if raw is None:
            raise RecipeError(f"{path}: empty recipe (a recipe is a mapping of sections: data, model, ...)")
        lines = _key_lines(node, "") if raw else {}
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to be a recipe") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = (getattr(exc, "problem", None) or str(exc) or type(exc).__name__).splitlines()[0]
        raise RecipeError(f"{path}{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (data, model, train, ...)")
    recipe = parse_recipe(raw, overrides, source=str(path), lines=lines)
    if check:
        check_recipe(recipe, str(path), recipe_lines(lines, overrides))
    return recipe


MAX_RECIPE_VALUES, MAX_RECIPE_DEPTH, MAX_RECIPE_BYTES = 10_000, 16, 2**20
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


def _check_node(node: yaml.Node | None, path: Path) -> None:
    """Refuse a YAML document that expands (through aliases) to more than MAX_RECIPE_VALUES values, nests
    deeper than MAX_RECIPE_DEPTH, or repeats a key in one mapping (YAML would keep the last silently)."""
    stack, count = [(node, 0)] if node is not None else [], 0
    while stack:
        current, depth = stack.pop()
        count += 1
        line = current.start_mark.line + 1
        if count > MAX_RECIPE_VALUES:
            raise RecipeError(f"{path}: expands to more than {MAX_RECIPE_VALUES} values (YAML aliases?)")
        if depth > MAX_RECIPE_DEPTH:
            raise RecipeError(f"{path}:{line}: nested deeper than {MAX_RECIPE_DEPTH} levels")
        if isinstance(current, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in current.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name != "<<" and name in first:
                    where = f"{path}:{key.start_mark.line + 1}"
                    raise RecipeError(f"{where}: duplicate key '{name}' (first at line {first[name]})")
                if name is not None:
                    first[name] = key.start_mark.line + 1
                stack += [(key, depth + 1), (value, depth + 1)]
        elif isinstance(current, yaml.SequenceNode):
            stack += [(item, depth + 1) for item in current.value]


def recipe_lines(lines: dict[str, int], overrides: list[str]) -> dict[str, int | str]:
    out: dict[str, int | str] = dict(lines)
    out.update({o.partition("=")[0]: f"override '{o}'" for o in overrides})
    return out


def parse_recipe(raw: dict, overrides: list[str] = (), source: str = "<recipe>", lines=None) -> Recipe:
    # Name overrides go first: choosing another component drops the options written for the old one.
    for override in sorted(overrides, key=lambda o: not o.partition("=")[0].endswith(".name")):
        _apply_override(raw, override)
    return _build(Recipe, raw, "", _Where(source, recipe_lines(lines or {}, overrides)))


def to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain YAML-able data (components flattened back to name + args)."""

    def convert(value):
        if isinstance(value, Component):
            return {"name": value.name, **{k: convert(v) for k, v in value.args.items()}}
        if dataclasses.is_dataclass(value):
            out = {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
            out.update(out.pop("options", None) or {})
            return out
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        return value

    return convert(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


# ---------------------------------------------------------------- components


def option_types(factory: Any) -> tuple[dict[str, Any], bool]:
    """The recipe options of a factory: its parameters that have defaults, with their annotations.

    Parameters without defaults (in_channels, latent_dim, dim, ...) are supplied by the toolkit.
    The bool tells whether the factory also takes **kwargs (then any key is accepted).
    """
    target = factory.__init__ if isinstance(factory, type) else factory
    if target is object.__init__:  # a class with no __init__ of its own takes no options
        return {}, False
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to unchecked
        hints = {}
    options, open_ended = {}, False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
        elif param.default is not param.empty and param.name != "self":
            options[param.name] = hints.get(param.name, Any)
    return options, open_ended


def check_options(factory: Any, options: dict[str, Any], key: str, where: _Where | None = None) -> None:
    where = where or _Where("recipe", {})
    allowed, open_ended = option_types(factory)
    for name, value in options.items():
        dotted = f"{key}.{name}"
        if name not in allowed:
            if not open_ended:
                raise where.error(dotted, f"unknown key{closest(name, allowed, prefix=key + '.')}")
        elif not check_type(value, allowed[name]):
            raise where.error(dotted, f"expected {_describe(allowed[name])}, got {_show(value)}")


def check_recipe(recipe: Recipe, source: str = "recipe", lines: dict[str, int | str] | None = None) -> None:
    """Check component names and their options against the installed plugins, building nothing."""
    from vqtoolkit.plugins import registry

    where = _Where(source, lines or {})
    if not re.fullmatch(DEVICE_PATTERN, recipe.train.device):
        raise where.error(
            "train.device", f"unknown device {recipe.train.device!r} (auto, cpu, cuda, cuda:N, mps)"
        )
    if recipe.tokenizer:
        return _check_prior_recipe(recipe, where)
    try:
        modality = registry("modalities").entry(recipe.data.modality, "data.modality").factory
    except VQTError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    check_options(modality.dataset, recipe.data.options, "data", where)
    parts = [
        ("encoders", recipe.model.encoder, "model.encoder", modality.encoder),
        ("decoders", recipe.model.decoder, "model.decoder", modality.decoder),
        ("losses", recipe.model.loss, "model.loss", modality.loss),
        ("bottlenecks", recipe.bottleneck, "bottleneck", ""),
    ]
    if recipe.prior is not None:
        parts.append(("priors", recipe.prior, "prior", ""))
    if recipe.adversarial is not None:
        if not recipe.adversarial.discriminators:
            raise where.error("adversarial.discriminators", "name at least one discriminator")
        for index, component in enumerate(recipe.adversarial.discriminators):
            parts.append(("discriminators", component, f"adversarial.discriminators.{index}", ""))
    for kind, component, key, default in parts:
        name = component.name or default
        if not name:
            raise where.error(f"{key}.name", "no component named")
        try:
            factory = registry(kind).get(name, f"{key}.name")
        except VQTError as exc:
            raise where.error(f"{key}.name", str(exc).split(": ", 1)[1]) from None
        check_options(factory, component.args, key, where)
    for index, metric in enumerate(recipe.eval.metrics):
        try:
            registry("metrics").get(metric, "eval.metrics")
        except VQTError as exc:
            raise where.error(f"eval.metrics.{index}", str(exc).split(": ", 1)[1]) from None


def _check_prior_recipe(recipe: Recipe, where: _Where) -> None:
    """A prior recipe: a tokenizer run, a prior component, and only data paths from `data`. Like data.path,
    the tokenizer run need not exist yet when the recipe is validated; training says so if it doesn't."""
    from vqtoolkit.plugins import registry

    if recipe.data.options:
        key = f"data.{next(iter(recipe.data.options))}"
        raise where.error(
            key, "a prior recipe takes only data.path and data.eval_path; the rest comes from the tokenizer"
        )
    prior = recipe.prior or Component()
    try:
        factory = registry("priors").get(prior.name or "pixelcnn", "prior.name")
    except VQTError as exc:
        raise where.error("prior.name", str(exc).split(": ", 1)[1]) from None
    check_options(factory, prior.args, "prior", where)


def instantiate(kind: str, component: Component, key: str, default: str = "", /, *args, **host_args):
    """Build a registered component: host-supplied arguments plus the recipe's options."""
    from vqtoolkit.plugins import registry

    name = component.name or default
    factory = registry(kind).get(name, f"{key}.name")
    check_options(factory, component.args, key)
    try:
        return factory(*args, **host_args, **component.args)
    except (ValueError, TypeError) as exc:  # the factory's own check of its options: a recipe error
        raise RecipeError(f"{key}: {str(exc).splitlines()[0][:200]}") from None


# ---------------------------------------------------------------- internals


@dataclass
class _Where:
    source: str
    lines: dict[str, int | str]  # dotted key -> line number, or the override that set it

    def error(self, key: str, message: str) -> RecipeError:
        line = self.lines.get(key) or self.lines.get(key.rsplit(".", 1)[0])
        place = (
            f"{self.source}, {line}"
            if isinstance(line, str)
            else f"{self.source}:{line}"
            if line
            else self.source
        )
        return RecipeError(f"{place}: {key}: {message}")


def _key_lines(node, prefix: str) -> dict[str, int]:
    out = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, key + "."))
    return out


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override '{override}': expected dotted.key=value, e.g. train.max_steps=100")
    try:
        value = yaml.load(text, Loader=_YAMLLoader) if text else ""
    except yaml.YAMLError:
        value = text
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        child = node.get(part)
        if isinstance(child, str):  # `encoder: conv` shorthand becomes a mapping
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    if last == "name" and parents and node.get("name") != value:
        node.clear()
    node[last] = value


def _build(cls, raw: Any, prefix: str, where: _Where):
    if cls is Component:
        return _build_component(raw, prefix, where)
    if not isinstance(raw, dict):
        raise where.error(prefix.rstrip("."), f"expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs, extra = {}, {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names or key in ("options", "args"):
            if "options" in names:  # data: unknown keys belong to the modality, checked by check_recipe
                extra[key] = value
                continue
            raise where.error(dotted, f"unknown key{closest(str(key), names, prefix)}")
        kwargs[key] = _convert(value, hints[key], dotted, where)
    if extra:
        kwargs["options"] = extra
    return cls(**kwargs)


def _build_component(raw: Any, prefix: str, where: _Where) -> Component:
    key = prefix.rstrip(".")
    if isinstance(raw, str):
        return Component(raw)
    if not isinstance(raw, dict):
        raise where.error(key, f"expected a component name or a mapping with 'name', got {_show(raw)}")
    args = dict(raw)
    name = args.pop("name", "")
    if not isinstance(name, str):
        raise where.error(f"{key}.name", f"expected a string, got {_show(name)}")
    return Component(name, args)


def _convert(value: Any, hint: Any, key: str, where: _Where):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(h for h in options if h is not type(None))
        return _convert(value, hint, key, where)
    if origin is list and typing.get_args(hint) == (Component,):
        if not isinstance(value, list):
            raise where.error(key, f"expected a list of components, got {_show(value)}")
        return [_build_component(item, f"{key}.{index}.", where) for index, item in enumerate(value)]
    if check_type(value, hint):
        return tuple(value) if origin is tuple else value
    raise where.error(key, f"expected {_describe(hint)}, got {_show(value)}")


def check_type(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type annotation (int is accepted for float, bool is not a number)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        ranges = [r for r in hint.__metadata__ if isinstance(r, Range)]
        return check_type(value, args[0]) and all(r.holds(value) for r in ranges)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(check_type(value, h) for h in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            return False
        item = args[0] if args else Any
        return all(check_type(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        ranges = [r.describe() for r in hint.__metadata__ if isinstance(r, Range)]
        return " ".join([_describe(args[0]), *ranges])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        noun, _, rest = (_describe(args[0]).split(" ", 1)[-1] if args else "value").partition(" ")
        item = f"{noun}s {rest}".strip()
        count = f"{len(args)} " if origin is tuple and Ellipsis not in args else ""
        return f"a list of {count}{item}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"
