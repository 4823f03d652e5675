"""Wan Studio entry point: flags/env -> Engine -> wan_ui.build(engine) -> launch.

Every flag can also come from an environment variable (WAN_MODEL, WAN_MEMORY, ...), which is how a Hugging Face
Space configures it; Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured too.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.flags import (  # no torch: --help answers at once
    ATTENTION_BACKENDS,
    FILE_NAMINGS,
    MEMORY_MODES,
    QUANTIZE_TYPES,
    REFINE_BACKENDS,
    TEXT_ENCODER_DEVICES,
)

SHARE_WARNING = (
    "This studio is shared WITHOUT a password: anyone with the link can use your GPU and see every video in "
    "the gallery. Restart with --auth user:password (or --auth-file) to protect it."
)


def default_model() -> str:
    import torch

    return "ti2v-5b" if torch.cuda.is_available() else "tiny-ti2v"


@dataclass(frozen=True)
class Flag:
    """One launch option: the parser, --help and the README's list are all made from these rows (FLAGS)."""

    name: str
    env: str | None  # its environment variable (how a Hugging Face Space sets it)
    default: Any  # a callable is asked at parse time (defaults that follow Gradio's own variables)
    help: str
    group: str = ""  # a key of GROUPS; "" = the general options
    kind: Any = str  # str, int, float, "switch" (on/off; the variable as 1) or "logins" (repeatable)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    read_env: bool = True  # False: what uses the option reads the variable itself (the refiner's config)

    def default_now(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def shown(self) -> str:
        value = self.default_now()
        return "off" if value is False else "none" if value is None or value == [] else str(value)


GROUPS = {
    "speed": "speed (off by default; anything the machine can't do falls back with a notice)",
    "weights": "weights (for 12-24 GB cards: quantized storage and the files you already have)",
    "files": "what a video file carries (see the README's Content credentials)",
    "credentials": "content credentials (C2PA: every video says, signed, that AI made it and with what)",
    "refine": "prompt refinement",
}
FLAGS = (
    Flag(
        "--model",
        "WAN_MODEL",
        "auto",
        "catalog id (ti2v-5b, t2v-a14b, i2v-a14b, tiny-ti2v, tiny-t2v-moe, tiny-i2v-moe), a diffusers folder or a "
        "Hub id; auto = ti2v-5b on a CUDA GPU, else the tiny offline demo",
    ),
    Flag(
        "--memory",
        "WAN_MEMORY",
        "auto",
        "where the weights live: none (all on the GPU), model, group or sequential offload (less VRAM, slower); "
        "auto picks from free VRAM and host RAM",
        choices=MEMORY_MODES,
    ),
    Flag(
        "--host",
        "WAN_HOST",
        lambda: os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        "address to listen on; 127.0.0.1 = this machine only, 0.0.0.0 = your network (plain HTTP)",
    ),
    Flag("--port", "WAN_PORT", lambda: int(os.environ.get("GRADIO_SERVER_PORT") or 7860), "port of the page", kind=int),
    Flag(
        "--share",
        "WAN_SHARE",
        False,
        "also make a temporary public link through Gradio's relay (needs --auth or --auth-file)",
        kind="switch",
    ),
    Flag(
        "--auth",
        "WAN_AUTH",
        [],
        "a login, repeatable (the variable: comma-separated); none = the page is open",
        kind="logins",
        metavar="USER:PASSWORD",
    ),
    Flag("--auth-file", "WAN_AUTH_FILE", None, "a file of USER:PASSWORD lines, kept out of the process list"),
    Flag(
        "--insecure-share",
        "WAN_INSECURE_SHARE",
        False,
        "allow --share without a login (anyone with the link can use the GPU and see the gallery)",
        kind="switch",
    ),
    Flag("--outputs", "WAN_OUTPUTS", "outputs", "folder for finished videos and their settings (the Gallery)"),
    Flag(
        "--loras",
        "WAN_LORAS",
        "loras",
        "LoRA folder: NAME.safetensors files, or NAME/ folders holding a high_noise and a low_noise file for the "
        "A14B experts; published 4-step LoRAs are fetched into it on first use",
    ),
    Flag(
        "--lora-presets",
        "WAN_LORA_PRESETS",
        None,
        "a JSON file of published LoRAs to fetch by name, in the form of presets/loras.json (a team's own Hub "
        "LoRAs); default: presets/loras.json",
    ),
    Flag(
        "--parallel",
        "WAN_PARALLEL",
        1,
        "split every video over N processes, one GPU each (the first N that CUDA_VISIBLE_DEVICES shows), with "
        "Ulysses context parallelism; without CUDA, N CPU processes over gloo",
        kind=int,
        metavar="N",
    ),
    Flag(
        "--workers",
        "WAN_WORKERS",
        1,
        "make N videos at once: N workers on Ray, each with its own copy of the model on its own GPU (with "
        "--parallel P, P GPUs each); without --ray a local Ray instance on 127.0.0.1 is started and stopped with "
        "the studio",
        kind=int,
        metavar="N",
    ),
    Flag(
        "--ray",
        "WAN_RAY",
        None,
        "place the workers on the team's Ray cluster at this address (see the README's Several GPUs and machines)",
        metavar="ADDRESS",
    ),
    Flag("--queue-size", "WAN_QUEUE_SIZE", 16, "jobs that may wait behind the running one", kind=int),
    Flag("--max-upload", "WAN_MAX_UPLOAD", "25mb", "largest file a user may upload (a picture, a video to extend)"),
    Flag(
        "--preload",
        "WAN_PRELOAD",
        False,
        "load the model at start instead of on the first job (the page is up at once either way)",
        kind="switch",
    ),
    Flag("--attention", "WAN_ATTENTION", "native", "attention kernel", "speed", choices=tuple(ATTENTION_BACKENDS)),
    Flag("--compile", "WAN_COMPILE", False, "regional torch.compile of the transformer blocks", "speed", "switch"),
    Flag(
        "--step-cache",
        "WAN_STEP_CACHE",
        0.0,
        "First Block Cache threshold, e.g. 0.05 (0 = off): faster, slightly different output",
        "speed",
        float,
        metavar="THRESHOLD",
    ),
    Flag("--fp8", "WAN_FP8", False, "store the transformers' weights in fp8 (for 24 GB cards)", "speed", "switch"),
    Flag(
        "--quantize",
        "WAN_QUANTIZE",
        "none",
        "store the transformer(s) quantized on load: int8 (weight-only, any card and the CPU) or fp8 (weights and "
        "matmuls in fp8; RTX 40/50, L4, H100 and newer)",
        "weights",
        choices=QUANTIZE_TYPES,
    ),
    Flag(
        "--quantize-text",
        "WAN_QUANTIZE_TEXT",
        "none",
        "the same for the umT5 text encoder",
        "weights",
        choices=QUANTIZE_TYPES,
    ),
    Flag(
        "--transformer",
        "WAN_TRANSFORMER",
        None,
        "a single-file transformer replacing the model folder's (MoE: the high-noise expert): GGUF (Q8_0, Q6_K, "
        "Q5, Q4…) or safetensors in the original Wan, ComfyUI or diffusers layout",
        "weights",
        metavar="FILE",
    ),
    Flag(
        "--transformer-2",
        "WAN_TRANSFORMER_2",
        None,
        "the same for the A14B low-noise expert",
        "weights",
        metavar="FILE",
    ),
    Flag(
        "--text-encoder-device",
        "WAN_TEXT_ENCODER_DEVICE",
        "auto",
        "cpu: keep the text encoder in RAM and run it on the CPU (as the official --t5_cpu; frees about 11 GB of "
        "VRAM, each prompt takes a few seconds longer)",
        "weights",
        choices=TEXT_ENCODER_DEVICES,
    ),
    Flag(
        "--filenames",
        "WAN_FILENAMES",
        "prompt",
        "how finished videos are named: prompt = time, seed and the prompt's first words (whoever gets the file "
        "reads them); plain = time, seed and a counter",
        "files",
        choices=FILE_NAMINGS,
    ),
    Flag(
        "--no-embedded-prompt",
        "WAN_NO_EMBEDDED_PROMPT",
        False,
        "keep the prompt and every other text out of the settings each MP4 carries in its metadata (the JSON beside "
        "it keeps everything)",
        "files",
        "switch",
    ),
    Flag(
        "--no-credentials",
        "WAN_NO_CREDENTIALS",
        False,
        "save videos without content credentials",
        "credentials",
        "switch",
    ),
    Flag(
        "--credentials-cert",
        "WAN_CREDENTIALS_CERT",
        None,
        "your organisation's signing certificate chain (PEM, the signing certificate first); without it a local "
        "certificate is made once in ~/.config/wan-studio/credentials (validators show it as untrusted)",
        "credentials",
        metavar="FILE",
    ),
    Flag(
        "--credentials-key", "WAN_CREDENTIALS_KEY", None, "its private key (PEM, PKCS#8)", "credentials", metavar="FILE"
    ),
    Flag(
        "--credentials-include-prompt",
        "WAN_CREDENTIALS_INCLUDE_PROMPT",
        False,
        "also state the prompt in the credentials (off: prompts may be private; the settings file keeps them)",
        "credentials",
        "switch",
    ),
    Flag(
        "--refine-backend",
        "WAN_REFINE_BACKEND",
        None,
        "default refiner; none = openai when a server is set, else rules",
        "refine",
        choices=REFINE_BACKENDS,
        read_env=False,
    ),
    Flag(
        "--refine-model",
        "WAN_REFINE_MODEL",
        None,
        "chat LLM for the local refiner: Hub id or folder (none: the studio's default)",
        "refine",
        read_env=False,
    ),
    Flag(
        "--openai-base-url",
        "WAN_OPENAI_BASE_URL",
        None,
        "OpenAI-compatible server for the openai refiner, e.g. http://127.0.0.1:11434/v1; its key is read from "
        "WAN_OPENAI_API_KEY or OPENAI_API_KEY only, so it never shows in the process list",
        "refine",
        read_env=False,
    ),
    Flag("--openai-model", "WAN_OPENAI_MODEL", None, "model name on that server", "refine", read_env=False),
)


def _from_env(flag: Flag, parser: argparse.ArgumentParser) -> Any:
    """The flag's value from its environment variable (an empty one counts as unset), else its default."""
    raw = os.environ.get(flag.env) if flag.env and flag.read_env else None
    if not raw:
        return flag.default_now()
    if flag.kind == "switch":
        return raw == "1"
    if flag.kind == "logins":
        return [a for a in raw.split(",") if a]
    try:
        value = flag.kind(raw)
    except ValueError:
        parser.error(f"{flag.env}={raw!r} is not a valid value for {flag.name}")
    if flag.choices and value not in flag.choices:
        parser.error(f"{flag.env}={raw!r}: {flag.name} must be one of {', '.join(flag.choices)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line, made from FLAGS: each option's help says its default and its variable."""
    parser = argparse.ArgumentParser(
        description="Wan Studio: make videos with Wan2.2 on your own GPU. Every option can also be set with the "
        "environment variable named in its help (how a Hugging Face Space is configured)."
    )
    groups = {"": parser} | {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for flag in FLAGS:
        where = f"env {flag.env}; " if flag.env else ""
        kwargs: dict[str, Any] = {"help": f"{flag.help} ({where}default: {flag.shown()})"}
        if flag.kind == "switch":
            kwargs["action"] = "store_true"
        elif flag.kind == "logins":  # the variable's logins apply when none is given (parse_args)
            kwargs.update(action="append", metavar=flag.metavar)
        else:
            kwargs.update(type=flag.kind, choices=flag.choices, metavar=flag.metavar)
        default = [] if flag.kind == "logins" else _from_env(flag, parser)
        groups[flag.group].add_argument(flag.name, default=default, **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in FLAGS:
        dest = flag.name.lstrip("-").replace("-", "_")
        if flag.kind == "logins" and not getattr(args, dest):  # logins given on the command line replace these
            setattr(args, dest, _from_env(flag, parser))
    return args


def flags_markdown() -> str:
    """The README's list of launch options (between its <!-- flags --> markers), made from FLAGS."""
    lines = []
    for key, title in {"": "general", **GROUPS}.items():
        rows = [f for f in FLAGS if f.group == key]
        lines.append(f"- **{title.split(' (')[0].capitalize()}**: " + "; ".join(_flag_text(f) for f in rows) + ".")
    return "\n".join(lines)


def _flag_text(flag: Flag) -> str:
    choices = f" {'|'.join(flag.choices)}" if flag.choices else f" {flag.metavar}" if flag.metavar else ""
    env = f"/`{flag.env}`" if flag.env else ""
    default = "" if flag.kind == "switch" or flag.shown() == "none" else f" (default {flag.shown()})"
    return f"`{flag.name}{choices}`{env}{default}"


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


def _log_setup() -> None:
    """The studio's own lines at INFO (one per refusal or failure); libraries stay at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s wan-studio: %(message)s", "%H:%M:%S"))
    studio = logging.getLogger("wan_studio")
    studio.addHandler(handler)
    studio.setLevel(logging.INFO)
    studio.propagate = False


def launch_report(engine) -> list[str]:
    """What the terminal says about the launch model before anyone waits: it cannot load (why, and the fix), or a
    warning worth reading (no CUDA GPU for a real model, a download to come)."""
    state = engine.state()
    lines = [engine.credentials.describe()] if engine.credentials.problem else []  # said once, here
    if state.state == "failed":
        return [*lines, f"Model {state.model} cannot be used: {state.message.removeprefix(f'Model {state.model}: ')}"]
    return [*lines, state.advice] if state.advice else lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _log_setup()
    from wan_ui.terminal import fold_tracebacks

    fold_tracebacks()  # Gradio's traceback for a request it refuses becomes one line
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
    from engine import CredentialOptions, Engine, PromptRefiner, RefinerConfig, SpeedOptions, WeightOptions

    if args.parallel < 1 or args.workers < 1:
        raise SystemExit(f"--parallel and --workers must be 1 or more (got {args.parallel} and {args.workers}).")
    cluster = args.ray or ("local" if args.workers > 1 else None)
    if cluster and importlib.util.find_spec("ray") is None:
        raise SystemExit(
            f"{'--ray' if args.ray else f'--workers {args.workers}'} needs Ray, which is not installed: "
            "pip install -r requirements-ray.txt"
        )
    model = default_model() if args.model == "auto" else args.model
    speed = SpeedOptions(
        attention_backend=args.attention,
        compile=args.compile,
        cache="first_block" if args.step_cache > 0 else None,
        cache_threshold=args.step_cache if args.step_cache > 0 else SpeedOptions().cache_threshold,
        fp8=args.fp8,
    )
    engine = Engine(
        model=model,
        memory=args.memory,
        outputs=args.outputs,
        speed=speed,
        loras=args.loras,
        lora_presets=Path(args.lora_presets) if args.lora_presets else None,
        weights=WeightOptions(
            quantize=args.quantize,
            quantize_text=args.quantize_text,
            transformer=args.transformer,
            transformer_2=args.transformer_2,
            text_encoder_device=args.text_encoder_device,
        ),
        credentials=CredentialOptions(
            enabled=not args.no_credentials,
            cert=args.credentials_cert,
            key=args.credentials_key,
            include_prompt=args.credentials_include_prompt,
        ),
        filenames=args.filenames,
        embed_prompt=not args.no_embedded_prompt,
        parallel=args.parallel,
        workers=args.workers,
        cluster=cluster,
    )
    for line in launch_report(engine):
        print(f"Wan Studio: {line}", file=sys.stderr, flush=True)
    from wan_ui import zerogpu

    if (args.preload or zerogpu.active()) and engine.state().state != "failed":
        engine.load_model()  # on ZeroGPU the weights must be placed before the first GPU call
    import gradio as gr

    from wan_ui import CSS, HEAD, build

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
        head=HEAD,  # the comparison view's sync script (wan_ui/compare.py)
        show_error=True,
        quiet=True,  # Gradio's own lines point at launch() arguments; ours name the flags
        prevent_thread_lock=True,
    )
    print(f"Wan Studio is running on {demo.local_url}", flush=True)
    if demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    elif not args.share:
        print("Only this machine can open it; add --share (with --auth) for a public link.", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
