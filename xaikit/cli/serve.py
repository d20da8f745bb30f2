"""``xaikit serve``: a local explorer in the browser (models, heatmaps, filters).

A thin layer over :func:`xaikit.serve.create_app` run by uvicorn. It binds ``127.0.0.1`` by
default; any other ``--host`` prints an access token that every request must carry. FastAPI
and uvicorn are the optional ``serve`` extra: without them the command says how to install
them and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xaikit.cli._common import DATA_OPTION_HELP, DEVICE_HELP, SIZE_HELP

NAME = "serve"
HELP = "a local explorer in the browser: model cards, heatmaps side by side, filters"
MISSING = "xaikit serve needs the serve extra: pip install 'xaikit[serve]'"
DEFAULT_PORT = 8765

EPILOG = """\
The page lists the --model models and the shipped reference models (see `xaikit zoo`);
it never loads a model or a file the page names. Open the printed address in a browser.

security: the server listens on 127.0.0.1 unless --host says otherwise; any other --host
needs the access token printed at start (header X-Xaikit-Token or ?token=), and only
Host headers naming this server (--allowed-host adds names) are answered.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--model",
        "-m",
        action="append",
        default=[],
        metavar="M",
        help="a model to offer (repeatable): a reference model name, a checkpoint path or "
        "folder, 'torchvision:<name>', 'timm:<name>' or an architecture name (random weights)",
    )
    parser.add_argument(
        "--data",
        "-d",
        metavar="D",
        help="data set for the gallery and exemplars (test split), e.g. shapes; default: each "
        "model's training data set when it is a built-in one",
    )
    parser.add_argument(
        "--data-option", action="append", default=[], metavar="KEY=VALUE", help=DATA_OPTION_HELP
    )
    parser.add_argument("--size", type=int, metavar="PX", help=SIZE_HELP)
    parser.add_argument(
        "--items",
        type=int,
        default=64,
        metavar="N",
        help="data set items in the gallery and searched for exemplars (default: 64)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="offer only the --model models, not the shipped reference models",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="H",
        help="address to listen on (default: 127.0.0.1; any other needs the printed token)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"port (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name the page may be opened with (repeatable; e.g. the machine's "
        "name when --host 0.0.0.0)",
    )
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of stochastic methods (SmoothGrad, LIME, ...) when the page names none, so "
        "a permalink gives the same map again (default: 0)",
    )


def serve_extra_missing() -> str | None:
    """The one-line message when FastAPI or uvicorn is not installed, else ``None``."""
    import importlib.util

    for name in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(name) is None:
            return MISSING
    return None


def build_app(args: argparse.Namespace, token: str | None) -> Any:
    """The application for the parsed command line."""
    from xaikit.cli._common import cli_device
    from xaikit.errors import XaikitConfigError
    from xaikit.serve import create_app

    if args.items < 1:
        raise XaikitConfigError(f"--items must be at least 1, got {args.items}")
    if args.size is not None and args.size < 1:
        raise XaikitConfigError(f"--size must be a positive number of pixels, got {args.size}")
    if not 0 < args.port < 65536:
        raise XaikitConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if args.no_reference and not args.model:
        raise XaikitConfigError("--no-reference leaves no model: give --model M")
    device = cli_device(args.device)
    pairs = list(args.data_option)
    if args.size is not None:
        pairs.append(f"size={args.size}")
    app = create_app(
        models=list(args.model),
        data=args.data,
        token=token,
        host=args.host,
        port=args.port,
        allowed_hosts=args.allowed_host,
        data_options=pairs,
        items=args.items,
        shipped=not args.no_reference,
        device=device,
        seed=args.seed,
    )
    registry = app.state.registry
    for spec in args.model:  # load the command line's models now: a bad --model is exit 2
        registry.entry(spec).get()
    return app


def check_port(host: str, port: int) -> None:
    """A one-line error (exit 2) when ``host:port`` cannot be listened on (in use, or an
    address this machine does not have), before anything is loaded."""
    import socket

    from xaikit.errors import XaikitConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise XaikitConfigError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port "
                "or --host"
            ) from None


def run(args: argparse.Namespace) -> int:
    missing = serve_extra_missing()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    import uvicorn

    from xaikit.serve.security import new_token, token_required

    check_port(args.host, args.port)
    token = new_token() if token_required(args.host) else None
    app = build_app(args, token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    if token is not None:
        print(f"xaikit serve: access token {token}", flush=True)
        address += f"?token={token}"
    print(f"xaikit serve: open {address}  (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
