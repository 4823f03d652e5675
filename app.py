"""Wan Studio entry point: flags/env -> Engine -> wan_ui.build(engine) -> launch.

Every flag can also come from an environment variable (WAN_MODEL, WAN_MEMORY, ...), which is how a Hugging Face
Space configures it; Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine import ATTENTION_BACKENDS, MEMORY_MODES, REFINE_BACKENDS, Engine, PromptRefiner, RefinerConfig, SpeedOptions

SHARE_WARNING = (
    "This studio is shared WITHOUT a password: anyone with the link can use your GPU and see every video in "
    "the gallery. Restart with --auth user:password (or --auth-file) to protect it."
)


def default_model() -> str:
    import torch

    return "ti2v-5b" if torch.cuda.is_available() else "tiny-ti2v"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Wan Studio: make videos with Wan2.2 on your own GPU.")
    p.add_argument(
        "--model",
        default=env("WAN_MODEL", "auto"),
        help="catalog id (ti2v-5b, t2v-a14b, i2v-a14b, tiny-ti2v...), a diffusers folder or a Hub id; "
        "auto: ti2v-5b on a CUDA GPU, else the tiny offline demo",
    )
    p.add_argument("--memory", default=env("WAN_MEMORY", "auto"), choices=MEMORY_MODES)
    p.add_argument("--host", default=env("WAN_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1")
    p.add_argument("--port", type=int, default=int(env("WAN_PORT") or env("GRADIO_SERVER_PORT") or "7860"))
    p.add_argument("--share", action="store_true", default=env("WAN_SHARE", "") == "1", help="public share link")
    p.add_argument(
        "--auth", action="append", default=[], metavar="USER:PASSWORD", help="a login (repeatable); or WAN_AUTH"
    )
    p.add_argument("--auth-file", default=env("WAN_AUTH_FILE"), help="a file of USER:PASSWORD lines")
    p.add_argument(
        "--insecure-share",
        action="store_true",
        default=env("WAN_INSECURE_SHARE", "") == "1",
        help="allow --share without a login (anyone with the link can use the GPU and see the gallery)",
    )
    p.add_argument("--outputs", default=env("WAN_OUTPUTS", "outputs"))
    p.add_argument("--queue-size", type=int, default=int(env("WAN_QUEUE_SIZE", "16")), help="jobs waiting at most")
    p.add_argument("--max-upload", default=env("WAN_MAX_UPLOAD", "25mb"), help="largest upload (e.g. 25mb)")
    speed = p.add_argument_group("speed (off by default; anything the machine can't do falls back with a notice)")
    speed.add_argument(
        "--attention", default=env("WAN_ATTENTION", "native"), choices=list(ATTENTION_BACKENDS), help="attention kernel"
    )
    speed.add_argument(
        "--compile", action="store_true", default=env("WAN_COMPILE", "") == "1", help="regional torch.compile"
    )
    speed.add_argument(
        "--step-cache",
        type=float,
        default=float(env("WAN_STEP_CACHE", "0") or 0),
        metavar="THRESHOLD",
        help="First Block Cache with this threshold (e.g. 0.05; 0 = off): faster, slightly different output",
    )
    speed.add_argument(
        "--fp8", action="store_true", default=env("WAN_FP8", "") == "1", help="fp8 weight storage (24 GB cards)"
    )
    p.add_argument("--refine-backend", choices=REFINE_BACKENDS, help="default prompt refiner (WAN_REFINE_BACKEND)")
    p.add_argument("--refine-model", help="chat LLM for the local refiner: Hub id or folder (WAN_REFINE_MODEL)")
    p.add_argument(
        "--openai-base-url",
        help="OpenAI-compatible server for the openai refiner, e.g. http://127.0.0.1:11434/v1 (WAN_OPENAI_BASE_URL); "
        "its key is read from WAN_OPENAI_API_KEY or OPENAI_API_KEY only, so it never shows in the process list",
    )
    p.add_argument("--openai-model", help="model name on that server (WAN_OPENAI_MODEL)")
    p.add_argument(
        "--preload",
        action="store_true",
        default=env("WAN_PRELOAD", "") == "1",
        help="load the model before the first request (default: the page is up at once, the model loads on use)",
    )
    args = p.parse_args(argv)
    if not args.auth and env("WAN_AUTH"):
        args.auth = [a for a in env("WAN_AUTH", "").split(",") if a]
    return args


def read_logins(entries: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """USER:PASSWORD pairs from the flags and the file (blank lines and # comments skipped)."""
    lines = list(entries)
    if auth_file:
        text = Path(auth_file).expanduser().read_text(encoding="utf-8")
        lines += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    logins = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"A login must look like USER:PASSWORD (got {line.split(':')[0]!r}…).")
        logins.append((user, password))
    return logins


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logins = read_logins(args.auth, args.auth_file)
    notice = None
    if args.share and not logins:
        if not args.insecure_share:
            raise SystemExit(
                "Refusing to --share without a login: anyone with the link could use your GPU and see your "
                "videos. Add --auth USER:PASSWORD (or --auth-file FILE), or --insecure-share if you really mean it."
            )
        notice = SHARE_WARNING
        print(f"WARNING: {SHARE_WARNING}", file=sys.stderr)
    model = default_model() if args.model == "auto" else args.model
    speed = SpeedOptions(
        attention_backend=args.attention,
        compile=args.compile,
        cache="first_block" if args.step_cache > 0 else None,
        cache_threshold=args.step_cache if args.step_cache > 0 else SpeedOptions().cache_threshold,
        fp8=args.fp8,
    )
    engine = Engine(model=model, memory=args.memory, outputs=args.outputs, speed=speed)
    from wan_ui import zerogpu

    if args.preload or zerogpu.active():  # on ZeroGPU the weights must be placed before the first GPU call
        engine.load_model()
    import gradio as gr

    from wan_ui import CSS, build

    outputs = os.path.abspath(args.outputs)
    os.makedirs(outputs, exist_ok=True)
    gr.set_static_paths([outputs])  # finished videos are served in place, not copied into Gradio's cache
    config = RefinerConfig.from_env(
        backend=args.refine_backend,
        local_model=args.refine_model,
        openai_base_url=args.openai_base_url,
        openai_model=args.openai_model,
    )
    demo = build(engine, refiner=PromptRefiner(config, device=engine.device), notice=notice, queue_size=args.queue_size)
    # waiting happens in the engine's queue, bounded by --queue-size (see wan_ui.runs.Runs)
    demo.queue(default_concurrency_limit=1, api_open=False).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=logins or None,
        allowed_paths=[outputs],
        max_file_size=args.max_upload,
        css=CSS,
        show_error=True,
    )


if __name__ == "__main__":
    main()
