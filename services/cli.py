"""The `voxmesh` command: `up`, one service (`gateway|asr|llm|tts`), `talk`, `bench`, or `token`."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from clients.bench import add_arguments as add_bench_arguments
    from clients.talk import add_arguments

    parser = argparse.ArgumentParser(
        prog="voxmesh", description="Realtime voice assistant over Redis Streams."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Redis and all four services; Ctrl-C stops them")
    up.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    up.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    for name in ("gateway", "asr", "llm", "tts"):
        commands.add_parser(name, help=f"run the {name} service (configured by VOXMESH_{name.upper()}_* env)")
    add_arguments(commands.add_parser("talk", help="speak a WAV to a running gateway, save the reply"))
    add_bench_arguments(commands.add_parser("bench", help="benchmark a running assistant (latency)"))
    token = commands.add_parser(
        "token", help="print a session token for the gateway (secret from VOXMESH_TOKEN_SECRET[_FILE])"
    )
    token.add_argument("--ttl", type=int, default=None, metavar="S", help="lifetime in seconds (default 600)")
    token.add_argument("--subject", default=None, help="who the token is for (its `sub` claim)")
    return parser


def _print_token(ttl_s: int | None, subject: str | None) -> int:
    from shared.auth import MissingSecretError, Tokens, TokenSettings

    try:
        tokens = Tokens.from_settings(TokenSettings())
        if tokens is None:
            raise MissingSecretError("set VOXMESH_TOKEN_SECRET or VOXMESH_TOKEN_SECRET_FILE (the gateway's)")
        print(tokens.mint(subject=subject, ttl_s=ttl_s))
    except (MissingSecretError, ValueError) as exc:
        print(f"voxmesh token: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the chosen command."""
    args = _parser().parse_args(argv)
    if args.command == "up":
        from services.up import up

        return up(args.host, args.port)
    if args.command == "talk":
        from clients.talk import run

        return run(args)
    if args.command == "bench":
        from clients.bench import run as run_bench

        return run_bench(args)
    if args.command == "token":
        return _print_token(args.ttl, args.subject)
    if args.command == "gateway":
        from services.gateway.__main__ import main as service_main
    elif args.command == "asr":
        from services.asr.__main__ import main as service_main
    elif args.command == "llm":
        from services.llm.__main__ import main as service_main
    else:
        from services.tts.__main__ import main as service_main
    service_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
