"""The ``iisan-bench`` command. Flags override the config file; user errors print one line."""

from __future__ import annotations

import sys
from typing import Any

import click

from core.errors import BenchError


def _overrides(**flags: Any) -> dict[str, Any]:
    """Map CLI flags onto config keys (only flags the user gave; each key's flag is declared on its
    field: ``benchmark.config.flags``)."""
    from typing import get_origin

    from benchmark.config import flags as declared
    from benchmark.config import key_fields

    keys, fields = declared(), key_fields()
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = keys[flag]
        if get_origin(fields[f"{section}.{key}"][1]) is list:  # a list key's flag is a comma list
            value = [v.strip() for v in value.split(",") if v.strip()]
        out.setdefault(section, {})[key] = value
    return out


def _origins(**flags: Any) -> dict[str, str]:
    """Config key -> the flag that set it (errors about its value name the flag, not the file)."""
    from benchmark.config import flags as declared

    keys = declared()
    return {".".join(keys[f]): "--" + f.replace("_", "-") for f, v in flags.items() if v is not None}


def _config(config_path: str | None, sets: tuple[str, ...], **flags: Any):
    """The config from a file, ``--set`` pairs and flags (flags win), errors naming their source."""
    from benchmark.config import load_config, merge, parse_sets

    return load_config(config_path, merge(parse_sets(sets), _overrides(**flags)), _origins(**flags))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark what parameter-efficient fine-tuning really costs (IISAN, SIGIR 2024)."""


def _flag_options() -> dict[str, Any]:
    """Flag -> its click option, for every config key that declares a flag, its type, choices and
    help read from the field (``benchmark.settings``): a flag is declared once, where its key is."""
    from typing import Literal, get_args, get_origin

    from benchmark.config import flags, key_fields
    from core.keys import key_doc

    fields = key_fields()
    out = {}
    for flag, (section, name) in flags().items():
        f, tp = fields[f"{section}.{name}"]
        opt, extra = "--" + flag.replace("_", "-"), {}
        if tp is bool:
            opt, extra = f"{opt}/--no-{opt[2:]}", {"default": None}
        elif get_origin(tp) is Literal:  # checked by the config (one line naming the flag), not by click
            extra = {"metavar": "[" + "|".join(str(a) for a in get_args(tp)) + "]"}
        elif tp in (int, float):
            extra = {"type": tp}
        help_text = key_doc(f) + (" (a comma list)" if get_origin(tp) is list else "")
        out[flag] = click.option(opt, flag, help=f"{section}.{name}: {help_text}", **extra)
    return out


FLAG_OPTIONS = _flag_options()


RUN_OPTIONS = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (default: embedded bench.toml)."),
    *FLAG_OPTIONS.values(),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override any config key, e.g. --set train.max_steps_per_epoch=2 (repeatable; "
                      "the flags above win over it)."),
]


def _with(options: list):
    """A decorator applying ``options`` in order (the first is the first in ``--help``)."""

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def config_flags(*names: str):
    """The generated options of the named flags (``_flag_options``), for commands that take a few."""
    return _with([FLAG_OPTIONS[name] for name in names])


# The flags of ``run``, which ``estimate`` takes too: one list, so the two never differ.
run_options = _with(RUN_OPTIONS)


@cli.command()
@run_options
@click.option("--force", is_flag=True, help="Rerun runs already in OUT/results.jsonl (default: skip them).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def run(config_path: str | None, no_progress: bool, force: bool, sets: tuple[str, ...], **flags: Any) -> None:
    """Train and evaluate the selected methods; write OUT/results.jsonl and the report."""
    from benchmark.commands.floors import wants_floors
    from benchmark.launch.job import torchrun_job
    from benchmark.launch.sweep import run_benchmark

    cfg = _config(config_path, sets, **flags)
    failed: list[str] = []
    results = run_benchmark(cfg, progress=not no_progress, echo=click.echo, force=force, failed=failed)
    job = torchrun_job()
    if job is not None and job.rank != 0:  # rank 0 of the job writes the results and the report
        return
    if wants_floors(cfg):  # after every run, never beside one: a command of its own, composed here
        from benchmark.commands.floors import floors_command

        click.echo(f"floors: {floors_command(cfg, results.parent, steps=10, echo=click.echo)}")
    click.echo(f"results: {results}")
    try:
        from reports import build_report
    except ImportError:
        build_report = None
    if build_report is not None:
        click.echo(f"report: {build_report(results.parent)}")
    if failed:  # exit 1: the sweep finished and its report is written, but not every run is a result
        click.echo(f"iisan-bench: {len(failed)} run(s) did not finish ok: {', '.join(failed)}", err=True)
        sys.exit(1)


@cli.command()
@run_options
@click.option("--gpu", help="The GPU to predict for: h100-80gb, h200, a100-80gb, a100-40gb, l40s, rtx-4090, a10 "
                            "(default: --device cpu predicts this machine's tensor memory).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def estimate(config_path: str | None, sets: tuple[str, ...], gpu: str | None, fmt: str, **flags: Any) -> None:
    """Predict each method's memory per phase, step time and largest batch on a GPU, from a trace of
    its real training step on fake tensors: no GPU needed (docs/estimates.md)."""
    from benchmark.commands.estimate import estimate_command
    from benchmark.launch.recipe import check_methods, method_names

    cfg = _config(config_path, sets, **flags)
    names = method_names(cfg)
    check_methods(cfg, names)
    click.echo(estimate_command(cfg, names, gpu, fmt))


@cli.command("list")
@click.argument("pattern", default="*")
def list_cmd(pattern: str) -> None:
    """List methods (wildcards allowed) with a one-line description."""
    import fnmatch

    from methods.registry import available, describe

    names = [n for n in available() if fnmatch.fnmatchcase(n, pattern)]
    if not names:
        raise BenchError(f"no method matches '{pattern}' (available: {', '.join(available())})")
    width = max(len(n) for n in names)
    for n in names:
        click.echo(f"{n:<{width}}  {describe(n)}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (default: embedded bench.toml).")
@click.option("--methods", default="*", show_default=True,
              help="'*' (every listed method), 'all' (the paper's six), a comma list, or wildcards such as 'iisan*'.")
@click.option("--backbone", help="Backbone preset: tiny, minilm or base.")
@click.option("--init", type=click.Choice(["pretrained", "random"]),
              help="Accepted for symmetry with run; counts never need weights (architecture only).")
@click.option("--images", type=click.Choice(["real", "synthetic", "none"]), help="'none' counts text-only models.")
@click.option("--image-size", type=int, help="Image input size (default: 224 for presets with pretrained image encoders, as the paper; else data.image_size).")
def params(config_path: str | None, methods: str, image_size: int | None, **flags: Any) -> None:
    """Trainable and total parameters of every method, built on the meta device (no weights)."""
    from benchmark.commands.params import params_command
    from benchmark.launch.recipe import check_methods, method_names

    flags["images"] = "synthetic" if flags.get("images") == "real" else flags.get("images")
    cfg = _config(config_path, (), methods=methods, **flags)
    names = method_names(cfg)
    check_methods(cfg, names, applicable=False)  # a method that cannot apply is a row saying why
    click.echo(params_command(cfg, names, image_size))


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (default: embedded bench.toml).")
@config_flags("dataset", "backbone", "init", "device", "seed", "images", "trust_pickle")
@click.option("--rebuild", is_flag=True, help="Rebuild even if a valid cache exists.")
def cache(config_path: str | None, rebuild: bool, **flags: Any) -> None:
    """Build the iisan-cached cache of tapped pooled states (run builds it when missing)."""
    from benchmark.commands.cache import cache_command

    cfg = _config(config_path, (), **flags)
    cache_command(cfg, rebuild=rebuild, echo=click.echo)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (default: embedded bench.toml).")
@config_flags("dataset", "backbone", "device", "precision", "images")
@click.option("--out", help="Folder for floors.json (default: the config's run.out).")
@click.option("--steps", type=int, default=10, show_default=True, help="Timed steps per floor (after 3 warm-up steps).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key.")
def floors(config_path: str | None, steps: int, sets: tuple[str, ...], **flags: Any) -> None:
    """Time the plain-PyTorch floor of the run's work (FFT step, frozen forward, cached side-network
    step) on this machine, for the config's shapes; the report shows each method against it."""
    from pathlib import Path

    from benchmark.commands.floors import floors_command

    cfg = _config(config_path, sets, **flags)
    click.echo(f"floors: {floors_command(cfg, Path(cfg.run.out), steps)}")


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
def report(out_dir: str) -> None:
    """(Re)build OUT_DIR/report.md, summary.csv and plots from OUT_DIR/results.jsonl."""
    from reports import build_report

    click.echo(f"report: {build_report(out_dir)}")


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write compare.md and compare.csv here (default: print the markdown).")
def compare(dirs: tuple[str, ...], out_dir: str | None) -> None:
    """One report over several result folders (another device, commit or config): rows by method and
    folder, ratios to the first folder; refused in one line when the data, evaluation or encoders differ."""
    from reports.compare import compare as run_compare

    md, path = run_compare(list(dirs), out_dir)
    click.echo(f"compare: {path}" if path is not None else md, nl=path is not None)


def _terminate(signum, frame) -> None:
    """SIGTERM ends the sweep like Ctrl-C: cleanup (children, isolation payloads) still runs."""
    raise SystemExit(128 + signum)


class PipeSafe:
    """stdout that outlives its reader: once the pipe is closed (``iisan-bench run | head -2``), the
    rest goes to /dev/null instead of ending the sweep with a BrokenPipeError (SIGPIPE's exit 1,
    no report). The sweep keeps writing results and the report; stderr still says what happens."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        import os

        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())  # Python's own flush at exit goes there too
        os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    if not isinstance(sys.stdout, PipeSafe):
        sys.stdout = PipeSafe(sys.stdout)
    try:
        cli.main(args=argv, prog_name="iisan-bench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BenchError as exc:
        click.echo(f"iisan-bench: error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if not exc.filename:  # not about a file the user named or holds: a bug, keep its traceback
            raise
        click.echo(f"iisan-bench: error: {exc.filename}: {exc.strerror or exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
