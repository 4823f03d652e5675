"""Wan Studio entry point: flags/env -> Engine -> wan_ui.build(engine) -> launch."""

from __future__ import annotations

import argparse
import os

from engine import MEMORY_MODES, Engine


def default_model() -> str:
    import torch

    return "ti2v-5b" if torch.cuda.is_available() else "tiny-ti2v"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Wan Studio: make videos with Wan2.2 on your own GPU.")
    p.add_argument(
        "--model",
        default=env("WAN_MODEL", "auto"),
        help="catalog id (ti2v-5b, t2v-a14b, i2v-a14b, tiny-ti2v...), a diffusers folder or a Hub id",
    )
    p.add_argument("--memory", default=env("WAN_MEMORY", "auto"), choices=MEMORY_MODES)
    p.add_argument("--host", default=env("WAN_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("WAN_PORT", "7860")))
    p.add_argument("--outputs", default=env("WAN_OUTPUTS", "outputs"))
    p.add_argument(
        "--preload",
        action="store_true",
        default=env("WAN_PRELOAD", "") == "1",
        help="load the model before the first request",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = default_model() if args.model == "auto" else args.model
    engine = Engine(model=model, memory=args.memory, outputs=args.outputs)
    if args.preload:
        engine.load_model()
    from wan_ui import build

    demo = build(engine)
    demo.queue(default_concurrency_limit=1, api_open=False).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[os.path.abspath(args.outputs)]
    )


if __name__ == "__main__":
    main()
