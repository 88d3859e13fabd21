"""The ``edge-lstm`` console script: the full CLI on Python 3.10+, the device side alone on Python 3.9.

The host commands' option annotations use ``X | None``, which typer evaluates at
run time and Python 3.9 cannot; the device side (``predict``, ``bundle verify``)
is written for 3.9, so on 3.9 this entry point serves exactly those and says so
for any other command. Errors map to exit codes as :func:`edge_lstm.cli.main` maps
them (each :class:`~edge_lstm.errors.EdgeLstmError` carries its own code).
"""

from __future__ import annotations

import sys

#: commands served on Python 3.9
DEVICE_COMMANDS = ("predict", "bundle")


def main(argv: list[str] | None = None) -> int:
    """Run ``edge-lstm``; the exit code."""
    if sys.version_info >= (3, 10):  # noqa: UP036 - the device side supports 3.9
        from edge_lstm.cli import main as full

        return full(argv)
    return device_main(sys.argv[1:] if argv is None else argv)


def device_main(args: list[str]) -> int:
    """``predict`` and ``bundle verify`` with the error handling of the full CLI, for Python 3.9."""
    import typer

    from edge_lstm import __version__, cli_bundle, jsonio
    from edge_lstm.errors import EdgeLstmError

    words = [a for a in args if not a.startswith("-")]
    if "--version" in args[:1]:
        print(f"edge-lstm {__version__}")
        return 0
    if words and words[0] not in DEVICE_COMMANDS:
        print(f"error: edge-lstm {words[0]} needs Python 3.10 or newer (this is {sys.version.split()[0]}); on "
              "Python 3.9 edge-lstm runs the device side: predict and bundle verify.", file=sys.stderr)
        return 2
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="edge-lstm on a device (Python 3.9): predict and bundle verify.")
    cli_bundle.register(app, device_only=True)
    as_json = "--json" in args
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    rc = None
    try:
        if as_json:
            with jsonio.json_stdout():
                rc = app(args=args, standalone_mode=False)
        else:
            rc = app(args=args, standalone_mode=False)
    except EdgeLstmError as e:
        _trace(e, debug)
        print(f"error: {e.render()}", file=sys.stderr)
        if as_json:
            jsonio.emit_failure(e)
        return e.exit_code
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `predict ... --json | head`: the reader has gone; stop quietly, as Unix tools do
        from edge_lstm.outputs import closed_pipe_exit

        return closed_pipe_exit()
    except SystemExit as e:  # typer turns a broken pipe inside a command into SystemExit(1)
        if isinstance(e.__context__, BrokenPipeError):
            from edge_lstm.outputs import closed_pipe_exit

            return closed_pipe_exit()
        raise
    except OSError as e:  # a full disk or an unreadable path: the user's to fix, exit 2 as in the full CLI
        _trace(e, debug)
        from edge_lstm.outputs import io_error

        err = io_error(e)
        print(f"error: {err.render()}", file=sys.stderr)
        if as_json:
            jsonio.emit_failure(err)
        return err.exit_code
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click's usage errors
            e.show()
            return 2
        _trace(e, debug)
        print(f"internal error: {type(e).__name__}: {e}\nRun again with --debug and report this bug.", file=sys.stderr)
        return 1
    if rc == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
        print("aborted", file=sys.stderr)
        if as_json:
            jsonio.emit_error(130, "aborted", "Interrupted.", None)
        return 130
    return int(rc) if isinstance(rc, int) else 0


def _trace(e: BaseException, debug: bool) -> None:
    """With ``--debug``, the traceback on stderr; the message and exit code stay those of a run without it."""
    if debug:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
