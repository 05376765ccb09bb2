"""Entry point of the ``mmguard`` command.

Every user error (:class:`mmguard.errors.MMGuardError`, bad options, missing files) is
printed as one line ``mmguard: error: ...`` on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import sys

import typer

from mmguard import __version__
from mmguard.errors import MMGuardError

app = typer.Typer(
    name="mmguard",
    help="Detect, attend away from and correct failing modalities in multimodal models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """mmguard command line."""


def _register() -> None:
    from mmguard.cli import (
        bench_cmd,
        data_cmd,
        demo_cmd,
        emma_cmd,
        eval_cmd,
        export_cmd,
        faults_cmd,
        guard_cmd,
        mmssl_cmd,
        serve_cmd,
        tune_cmd,
        twin_cmd,
    )

    app.add_typer(faults_cmd.app, name="faults", help="List fault types and preview them.")
    app.add_typer(data_cmd.app, name="data", help="Inspect datasets.")
    app.add_typer(emma_cmd.app, name="emma", help="EMMA: energy-based multi-modal attention.")
    app.add_typer(mmssl_cmd.app, name="mmssl", help="MMSSL: detect and correct failing modalities.")
    app.add_typer(twin_cmd.app, name="twin", help="Generate, inspect and preview digital-twin datasets.")
    app.command(name="eval")(eval_cmd.eval_command)
    app.command(name="demo")(demo_cmd.demo_command)
    app.command(name="guards")(guard_cmd.guards_command)
    app.command(name="fit")(guard_cmd.fit_command)
    app.command(name="score")(guard_cmd.score_command)
    app.command(name="transform")(guard_cmd.transform_command)
    app.command(name="bench")(bench_cmd.bench_command)
    app.command(name="tune")(tune_cmd.tune_command)
    app.command(name="serve")(serve_cmd.serve_command)
    app.command(name="export")(export_cmd.export_command)


_register()


def entrypoint(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (0 ok, 2 user error).

    Typer's parser exceptions are recognised by shape (``exit_code`` + ``format_message``)
    rather than by importing click, which recent Typer releases vendor privately.
    """
    try:
        rc = app(args=argv, prog_name="mmguard", standalone_mode=False)
    except MMGuardError as exc:
        sys.stderr.write(f"mmguard: error: {exc}\n")
        return 2
    except (typer.Exit, typer.Abort) as exc:
        code = getattr(exc, "exit_code", None)
        if code is None:  # Abort (Ctrl-C)
            sys.stderr.write("mmguard: aborted\n")
            return 130
        return int(code)
    except FileNotFoundError as exc:
        sys.stderr.write(f"mmguard: error: file not found: {exc.filename or exc}\n")
        return 2
    except OSError as exc:  # unwritable output, a directory where a file is expected, a full disk ...
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        sys.stderr.write(f"mmguard: error: {exc.strerror or exc}{where}\n")
        return 2
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.stderr.write(exc.format_message() + "\n")
                return 0
            msg = " ".join(str(exc.format_message()).split())
            sys.stderr.write(f"mmguard: error: {msg}\n")
            return int(exc.exit_code or 2)
        raise
    return int(rc) if isinstance(rc, int) else 0


def main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(entrypoint())


if __name__ == "__main__":  # pragma: no cover
    main()
