"""Command line: ``mlxnb serve [MODEL ...]`` runs the OpenAI-compatible API standalone.

The same app as :func:`mlxnb.serve`, in the foreground: Ctrl-C stops it and closes the engines.
Several models are served by name from one pool: the first loads at start, the others on their
first request, within the memory budget.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxnb", description="mlxnb command line")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model as an OpenAI-compatible API",
        description="Serve MODEL at http://HOST:PORT/v1 (OpenAI-compatible).",
    )
    serve.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="model directories or repo ids, served by name (default: mlxnb's model)",
    )
    serve.add_argument(
        "--budget-gb",
        type=float,
        help="most GiB of weights resident at once (default: 60%% of memory)",
    )
    serve.add_argument("--max-models", type=int, help="most models resident at once")
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
    serve.add_argument(
        "--kv-bits",
        type=int,
        choices=(2, 3, 4, 5, 6, 8),
        help="quantise KV caches to this many bits (long contexts in less memory; requests "
        "then decode one at a time)",
    )
    serve.add_argument(
        "--kv-group-size", type=int, default=64, help="elements per KV quantisation group"
    )
    serve.add_argument(
        "--quantized-kv-start",
        type=int,
        default=5000,
        help="tokens a sequence holds before its KV cache is quantised (default 5000)",
    )
    serve.add_argument(
        "--adapter-path",
        metavar="DIR",
        help="apply the LoRA adapters mlx_lm.lora wrote in DIR to the model (one model)",
    )
    serve.add_argument(
        "--distributed",
        action="store_true",
        help="shard the model over the processes mlx.launch started (rank 0 serves; one model)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    return parser


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The served engines' options the command line set (sharding, adapters, KV quantisation)."""
    options: dict[str, Any] = {"distributed": True} if args.distributed else {}
    if args.adapter_path is not None:
        options["adapter_path"] = args.adapter_path
    if args.kv_bits is None:
        return options
    return {
        **options,
        "kv_bits": args.kv_bits,
        "kv_group_size": args.kv_group_size,
        "quantized_kv_start": args.quantized_kv_start,
    }


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mlxnb._engine import ModelPool
    from mlxnb._server.app import create_app
    from mlxnb._server.background import bind_socket, warn_if_exposed

    if args.distributed:
        from mlxnb._engine.shared_pool import follow_unless_leading
        from mlxnb.errors import InvalidRequestError

        if len(args.models) > 1:
            raise InvalidRequestError("--distributed serves one model")
        model = args.models[0] if args.models else _default_model()
        status = follow_unless_leading(model, **engine_options(args))
        if status is not None:  # rank 0 serves; this rank followed it to the end
            return status
    if args.adapter_path is not None and len(args.models) > 1:
        from mlxnb.errors import InvalidRequestError

        raise InvalidRequestError("--adapter-path applies to one model; name one MODEL")
    warn_if_exposed(args.host, args.api_key)
    sock = bind_socket(args.host, args.port)  # fail on a busy port before loading a model
    models = list(args.models) or [_default_model()]
    budget = None if args.budget_gb is None else int(args.budget_gb * 2**30)
    pool = ModelPool(budget_bytes=budget, max_models=args.max_models)
    try:
        options = engine_options(args)
        names = [pool.register(model, **options) for model in models]
        print(f"mlxnb: loading {models[0]} …", file=sys.stderr, flush=True)
        pool.engine(names[0])  # fail before serving when the first model cannot load
        app = create_app(pool, api_key=args.api_key, cors_origins=args.cors_origins)
        host = args.host if ":" not in args.host else f"[{args.host}]"
        port = sock.getsockname()[1]
        print(
            f"mlxnb: serving {', '.join(names)} at http://{host}:{port}/v1",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(app, log_level=args.log_level, lifespan="off", ws="none")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        pool.close()
        sock.close()
    return 0


def _default_model() -> str:
    from mlxnb._engine.models import default_model

    return str(default_model())


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
