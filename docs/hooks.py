"""mkdocs hooks: the reference pages are generated from the code at every build, so they never go stale.

- reference/recipe.md: every recipe key from the dataclasses in vqtoolkit/config.py, with its type,
  default and the comment written next to (or above) the field.
- reference/components.md: every registered modality, encoder, decoder, bottleneck, loss, metric and
  prior, with the recipe options of its factory (annotated parameters with defaults) and their comments
  or `Args:` docstring lines.
- reference/cli.md: every `vqt` command, including those added through the `register_commands` hook.

Only the built-in plugins are documented (third-party autoload is switched off for the build). Run
reports under docs/img/report/ (written by `vqt report`) are added to the nav when they are not in it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import os
import re
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal

REPORTS = "img/report"  # run reports made by `vqt report` for these pages
GENERATED = {
    "reference/recipe.md": "recipe_page",
    "reference/components.md": "components_page",
    "reference/cli.md": "cli_page",
}


# ---------------------------------------------------------------- mkdocs events


def on_config(config):
    os.environ["VQT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # Reports that `vqt report RUN -o docs/img/report/NAME` wrote join the nav by themselves.
    listed = set(_nav_paths(config.nav or []))
    reports = sorted(Path(config.docs_dir).glob(f"{REPORTS}/*/report.md"))
    extra = [p.relative_to(config.docs_dir).as_posix() for p in reports]  # titled by their headings
    extra = [path for path in extra if path not in listed]
    if extra:
        config.nav.append({"Example reports": extra})
    return config


def _nav_paths(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_paths(value)]
    return [p for item in nav for p in _nav_paths(item)]


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, maker in GENERATED.items():
        files.append(File.generated(config, path, content=globals()[maker]()))
    return files


# ---------------------------------------------------------------- source comments


def _comments(source: str) -> dict[int, str]:
    """Line number (1-based) -> the comment on that line."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}


def field_docs(cls) -> dict[str, str]:
    """A dataclass's field name -> its comment: the comment lines just above the field, then the one after."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments, lines = _comments(source), source.splitlines()
    docs = {}
    for number, line in enumerate(lines, 1):
        match = re.match(r"    (\w+):", line)
        if not match:
            continue
        above, row = [], number - 1
        while row >= 1 and lines[row - 1].strip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        docs[match.group(1)] = " ".join(above + [comments.get(number, "")]).strip()
    return docs


def option_docs(factory) -> dict[str, str]:
    """A factory's parameter -> its comment in the signature, else its `Args:` line in the docstring."""
    target = factory.__init__ if isinstance(factory, type) else factory
    docs = {}
    args = re.search(r"^Args:\n((?:(?:    .*)?\n?)*)", own_doc(factory), re.M)
    if args:
        for match in re.finditer(r"^    (\w+): (.*(?:\n        .*)*)", args.group(1), re.M):
            docs[match.group(1)] = " ".join(match.group(2).split())
    try:
        source = textwrap.dedent(inspect.getsource(target))
    except (OSError, TypeError):
        return docs
    function = ast.parse(source).body[0]
    signature_lines = range(function.lineno, function.body[0].lineno)  # the body starts after them
    comments, lines = _comments(source), source.splitlines()
    for number in signature_lines:
        match = re.match(r"\s*(\w+)\s*:", lines[number - 1])
        if match and number in comments:
            docs[match.group(1)] = comments[number]
    return docs


def own_doc(obj) -> str:
    """An object's own docstring, not one a class inherits (from nn.Module, say)."""
    return inspect.cleandoc((obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__) or "")


def summary(obj) -> str:
    return " ".join(own_doc(obj).split("\n\n")[0].split())


# ---------------------------------------------------------------- formatting


def type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return "any"
    if origin is typing.Annotated:  # a range: "int >= 1", "float in [0, 1)"
        ranges = [r.describe() for r in hint.__metadata__ if hasattr(r, "describe")]
        return " ".join([type_name(args[0]), *ranges])
    if origin is Literal:
        return " or ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        if origin is tuple and args and Ellipsis not in args:
            return f"list of {len(args)} {type_name(args[0])}s"
        return f"list of {type_name(args[0])}s" if args else "list"
    if origin is dict or hint is dict:
        return "mapping"
    names = {int: "int", float: "float", bool: "bool", str: "string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def show(value: Any) -> str:
    import yaml

    if value is None:
        return "`null`"
    if isinstance(value, tuple):
        value = list(value)
    if value == "":
        return '`""`'
    if isinstance(value, float):
        return f"`{value!r}`"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"`{text}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows] + [""]


# ---------------------------------------------------------------- recipe keys


COMPONENT_DOCS = {
    "model.encoder": ("encoders", "the modality's default encoder"),
    "model.decoder": ("decoders", "the modality's default decoder"),
    "model.loss": ("losses", "the modality's default loss"),
    "bottleneck": ("bottlenecks", ""),
    "prior": ("priors", ""),
    "adversarial.discriminators": ("discriminators", ""),
}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def is_section(hint) -> bool:
    from vqtoolkit.config import Component

    return dataclasses.is_dataclass(hint) and hint is not Component


def recipe_rows(cls, prefix: str) -> list[list[str]]:
    from vqtoolkit.config import Component
    from vqtoolkit.registry import SINGULAR

    hints, docs, rows = typing.get_type_hints(cls, include_extras=True), field_docs(cls), []
    for f in dataclasses.fields(cls):
        key, hint, default = prefix + f.name, hints[f.name], _default(f)
        if is_section(hint):
            continue  # its own table
        if hint is Component or Component in typing.get_args(hint):
            kind, fallback = COMPONENT_DOCS[key]
            name = default.name if default else ""
            shown = show(name or None) if name or default is None else f'`""` ({fallback})'
            link = f"[{kind}](components.md#{kind})"
            rows.append([f"`{key}.name`", "string", shown, f"{docs[f.name]}; one of the registered {link}"])
            singular = SINGULAR[kind]
            rows.append([f"`{key}.<option>`", "", "", f"the chosen {singular}'s options, see {link}"])
            continue
        if f.name == "options":
            rows.append(
                [
                    f"`{prefix}<option>`",
                    "",
                    "",
                    docs[f.name] + " (see [modalities](components.md#modalities))",
                ]
            )
            continue
        rows.append([f"`{key}`", type_name(hint), show(default), docs[f.name]])
    return rows


def recipe_page() -> str:
    from vqtoolkit.config import Recipe

    hints = typing.get_type_hints(Recipe)
    out = [
        "# Recipe reference",
        "",
        "<!-- generated by docs/hooks.py from vqtoolkit/config.py at every build: edit its comments -->",
        "",
        "Every key a recipe may set, with its type and default; a key a recipe leaves out keeps its default.",
        "Any key can also be set on the command line as a dotted override, e.g. `train.max_steps=100`.",
        "See [recipes](../recipes.md) for how recipes are checked, and [components](components.md) for the",
        "options of each encoder, decoder, loss, bottleneck and prior.",
        "",
        "## Top level",
        "",
        *table(["key", "type", "default", "meaning"], recipe_rows(Recipe, "")),
    ]
    for f in dataclasses.fields(Recipe):
        if is_section(hints[f.name]):
            doc = field_docs(Recipe)[f.name]
            out += [
                f"## `{f.name}`",
                "",
                doc[0].upper() + doc[1:] + ".",
                "",
                *table(["key", "type", "default", "meaning"], recipe_rows(hints[f.name], f"{f.name}.")),
            ]
    out += [
        "## Prior recipes",
        "",
        "A recipe with `tokenizer:` trains a prior over the codes of that VQ-VAE run instead of a VQ-VAE.",
        "It takes `tokenizer`, `prior`, `optim` and `train`; from `data` only `path` and `eval_path`",
        "(everything else comes from the tokenizer run's own recipe). `prior.name` defaults to `pixelcnn`.",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- components


def option_rows(factory, fallback_docs: dict[str, str] | None = None) -> list[list[str]]:
    from vqtoolkit.config import option_types

    options, open_ended = option_types(factory)
    target = factory.__init__ if isinstance(factory, type) else factory
    params = inspect.signature(target).parameters
    docs = {**(fallback_docs or {}), **option_docs(factory)}
    rows = [
        [f"`{n}`", type_name(hint), show(params[n].default), docs.get(n, "")] for n, hint in options.items()
    ]
    if open_ended:
        rows.append(["any other key", "", "", "accepted (the factory takes `**options`)"])
    return rows


def components_page() -> str:
    from vqtoolkit.plugins import registries
    from vqtoolkit.registry import SINGULAR

    regs = registries()
    sections = {
        "encoders": "model.encoder",
        "decoders": "model.decoder",
        "losses": "model.loss",
        "bottlenecks": "bottleneck",
        "priors": "prior",
        "discriminators": "adversarial.discriminators[i]",
    }
    out = [
        "# Components",
        "",
        "<!-- generated by docs/hooks.py from the plugin registries at every build -->",
        "",
        "Everything below is registered through the [plugin hooks](../plugins.md) by the built-in plugins",
        "(`vqt plugins --all` lists the same for an installation, third-party plugins included). A recipe",
        "picks a component by `name`; the other keys in its mapping are the options listed with it.",
        "",
        "## Modalities",
        "",
        "`data.modality` picks one; its data options are keys directly under `data`.",
        "",
    ]
    for entry in regs["modalities"]:
        m = entry.factory
        out += [
            f"### `{entry.name}`",
            "",
            f"Plugin `{entry.plugin}`. Latent grid rank {m.rank}; reads "
            + ", ".join(f"`{e}`" for e in m.extensions)
            + ".",
            f"Defaults: encoder `{m.encoder}`, decoder `{m.decoder}`, loss `{m.loss}`; `vqt eval` reports "
            + (", ".join(f"`{n}`" for n in m.metrics) or "the loss only")
            + ".",
            "",
            "Data options (`data.<option>`):",
            "",
            *table(["option", "type", "default", "meaning"], option_rows(m.dataset)),
        ]
    for kind, key in sections.items():
        out += [
            f"## {kind.capitalize()}",
            "",
            f"Chosen with `{key}.name`; options are keys under `{key}`.",
            "",
        ]
        for entry in regs[kind]:
            out += [
                f"### `{entry.name}`",
                "",
                f"Plugin `{entry.plugin}`. {summary(entry.factory)}".strip(),
                "",
            ]
            # a decoder's options mirror those of the encoder of the same name, where they are documented
            twin = (
                regs["encoders"].get(entry.name)
                if kind == "decoders" and entry.name in regs["encoders"]
                else None
            )
            rows = option_rows(entry.factory, option_docs(twin) if twin else None)
            out += table(["option", "type", "default", "meaning"], rows) if rows else ["No options.", ""]
    out += [
        "## Metrics",
        "",
        "Reported by `vqt eval` and at the end of training for the modalities that list them.",
        "",
    ]
    rows = [
        [
            f"`{e.name}`",
            f"`{e.plugin}`",
            "higher" if e.meta.get("higher_is_better", True) else "lower",
            summary(e.factory),
        ]
        for e in regs["metrics"]
    ]
    out += table(["metric", "plugin", "better", "meaning"], rows)
    assert set(SINGULAR) == {*sections, "modalities", "metrics"}, "a new registry kind needs a section here"
    return "\n".join(out)


# ---------------------------------------------------------------- CLI


_commands_registered = False


def cli_root():
    """The `vqt` group with every command `vqtoolkit.cli.main` would add."""
    global _commands_registered
    from vqtoolkit.cli import cli
    from vqtoolkit.plugins import load_plugins, pm

    if not _commands_registered:  # `mkdocs serve` rebuilds in the same process
        load_plugins()
        pm.hook.register_commands(cli=cli)
        _commands_registered = True
    return cli


def help_markdown(text: str) -> list[str]:
    """Click help text -> Markdown: `\\b` paragraphs (examples) become code blocks."""
    out = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() in ("\b", "\\b"):  # click's no-rewrap marker (a backspace character)
            lines = lines[1:]
            if lines and lines[0].rstrip().endswith(":") and not lines[0].startswith(" "):
                out += [f"**{lines[0].strip().rstrip(':')}**", ""]
                lines = lines[1:]
            out += ["```bash", textwrap.dedent("\n".join(lines)), "```", ""]
        else:
            out += [" ".join(line.strip() for line in lines), ""]
    return out


def command_markdown(command, ctx, level: int) -> list[str]:
    import click

    out = [f"{'#' * level} `{ctx.command_path}`", ""]
    out += ["```text", command.get_usage(ctx).strip(), "```", ""]
    out += help_markdown(command.help or "")
    rows = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        if param.is_flag:
            kind = "flag"
        else:
            kind = param.metavar or param.type.name.upper()
        default = param.get_default(ctx, call=False)
        plain = isinstance(default, str | int | float | list | tuple) and default not in ("", ())
        shown = show(default) if plain and not param.is_flag else ""
        rows.append([names, kind, shown, (param.help or "") + (" (required)" if param.required else "")])
    if rows:
        out += table(["option", "value", "default", "meaning"], rows)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += command_markdown(sub, click.Context(sub, info_name=name, parent=ctx), level + 1)
    return out


def cli_page() -> str:
    import click

    cli = cli_root()
    ctx = click.Context(cli, info_name="vqt")
    out = [
        "# CLI reference",
        "",
        "<!-- generated by docs/hooks.py from the click commands at every build -->",
        "",
        "Every `vqt` command as `vqt COMMAND --help` prints it. Mistakes (a missing file, a bad recipe key)",
        "end with one line `error: ...` and exit code 1; `vqt --debug COMMAND` shows the full traceback.",
        "",
    ]
    return "\n".join(out + command_markdown(cli, ctx, 2))
