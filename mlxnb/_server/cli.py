"""Command line: ``mlxnb serve [MODEL]`` runs the OpenAI-compatible API standalone.

The same app as :func:`mlxnb.serve`, in the foreground: Ctrl-C stops it and closes the engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxnb", description="mlxnb command line")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model as an OpenAI-compatible API",
        description="Serve MODEL at http://HOST:PORT/v1 (OpenAI-compatible).",
    )
    serve.add_argument("model", nargs="?", help="model directory or repo id (default: mlxnb's)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument(
        "--api-key",
        default=os.environ.get("MLXNB_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 (default: $MLXNB_API_KEY)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="allow browser calls from ORIGIN (repeatable; CORS is off without)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mlxnb._engine import load
    from mlxnb._server.app import create_app
    from mlxnb._server.background import bind_socket, warn_if_exposed

    warn_if_exposed(args.host, args.api_key)
    sock = bind_socket(args.host, args.port)  # fail on a busy port before loading a model
    model = args.model
    if model is None:
        from mlxnb._engine.models import default_model

        model = default_model()
    print(f"mlxnb: loading {model} …", file=sys.stderr, flush=True)
    engine = load(model)
    try:
        app = create_app(engine, api_key=args.api_key, cors_origins=args.cors_origins)
        host = args.host if ":" not in args.host else f"[{args.host}]"
        port = sock.getsockname()[1]
        print(
            f"mlxnb: serving {engine.model_id} at http://{host}:{port}/v1",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(app, log_level=args.log_level, lifespan="off", ws="none")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mlxnb`` command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    from mlxnb.errors import MlxnbError

    args = _parser().parse_args(argv)
    try:
        return _serve(args)
    except MlxnbError as error:
        print(f"mlxnb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
