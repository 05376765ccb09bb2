"""``mmguard export``: a fitted guard's whole inference path as one ONNX graph (docs/export.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmguard.cli.common import JSON_OPTION, print_json


def export_command(
    guard_dir: Path = typer.Argument(..., help="Guard directory written by `mmguard fit`."),
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Path = typer.Option(..., "--out", help="File to write, e.g. model.onnx (replaced atomically)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Export a guard as one graph: raw modalities in; scores, flags, corrections, predictions out."""
    from mmguard.errors import SpecError
    from mmguard.export.onnx import check_format, export_onnx, require_export_extra
    from mmguard.guard import load_guard

    check_format(fmt)
    if out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a directory; give a file path such as model.onnx")
    require_export_extra()
    guard = load_guard(guard_dir)
    path = export_onnx(guard, out)
    summary = {"guard": guard.name, "format": fmt, "out": str(path), "bytes": path.stat().st_size,
               "inputs": list(guard.names), "outputs": guard.export_module().output_names}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"exported {guard.name} guard to {path} ({summary['bytes']:,} bytes); "
               f"inputs {', '.join(summary['inputs'])}; outputs {', '.join(summary['outputs'])}")
