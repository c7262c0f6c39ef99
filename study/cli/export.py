"""``nfstudy export``: the report's per-arm and paired tables as CSV, LaTeX or JSON
(:mod:`analysis.export`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from study.cli.app import PresetOpt, SetOpt, StudyArg, TrackingOpt, _plan, app, console
from study.cli.examples import epilog
from study.errors import ConfigError


@app.command(epilog=epilog("export"))
def export(
    name: StudyArg,
    format_: Annotated[str, typer.Option("--format", metavar="csv|latex|json", help="Output format.")] = "csv",
    table: Annotated[Optional[str], typer.Option("--table", metavar="per-arm|paired", help="One table only "
                                                 "(CSV holds one: per-arm unless this says paired).")] = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """The per-arm and paired tables of a study, as its report computes them, on stdout."""
    from analysis.export import FORMATS, TABLES, export_tables, render
    from study import paths
    from study.record.stores import check_tracking

    if format_ not in FORMATS:
        raise ConfigError(f"--format {format_}: allowed: {', '.join(FORMATS)}")
    if table is not None and table not in TABLES:
        raise ConfigError(f"--table {table}: allowed: {', '.join(TABLES)}")
    spec, runs = _plan(name, preset, set_)
    uri = paths.tracking_uri(tracking_uri)
    check_tracking(uri)
    tables = export_tables(spec, uri, {run.config_hash for run in runs})
    chosen = [table] if table else (["per-arm"] if format_ == "csv" else list(TABLES))
    console.file.write(render({key: tables[key] for key in chosen}, format_, spec.name))
