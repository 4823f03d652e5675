"""The LoRA picker of a generation tab: which LoRAs, their strengths, their trigger words, and the Fast choice.

The strengths box holds the same text the API takes ("NAME:STRENGTH", on A14B models "NAME:HIGH:LOW"), so what
the page sends is what a script would send; choosing LoRAs in the menu writes it, keeping strengths already typed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import Engine, ModelSpec

FAST = "fast"
FAST_LABEL = "Fast (4 steps)"


@dataclass
class LoraPicker:
    menu: gr.Dropdown
    strengths: gr.Textbox
    about: gr.Markdown


def build(mode: str, at: Callable[..., dict[str, Any]]) -> LoraPicker:
    """`at(name, **arguments)`: a control's arguments with the launch model's settings over them (generate_tab)."""
    with gr.Row():
        menu = gr.Dropdown(
            **at(
                "loras.menu",
                choices=[],
                value=[],
                multiselect=True,
                label="LoRAs",
                scale=3,
                elem_id=f"{mode}-loras",
                allow_custom_value=False,
            )
        )
        strengths = gr.Textbox(
            **at(
                "loras.strengths",
                info="NAME:STRENGTH; on the A14B models NAME:HIGH:LOW (high-noise and low-noise expert)",
                label="LoRA strengths",
                scale=3,
                elem_id=f"{mode}-lora-strengths",
            )
        )
    about = gr.Markdown("", elem_id=f"{mode}-lora-about")
    return LoraPicker(menu, strengths, about)


def names_in(text: str | None) -> list[str]:
    return [part.split(":")[0].strip() for part in (text or "").split(",") if part.strip()]


def strengths_text(names: list[str], text: str | None, moe: bool) -> str:
    """The strengths box for these LoRAs: what was typed for a LoRA stays, a new one starts at full strength."""
    typed = {part.split(":")[0].strip(): part.strip() for part in (text or "").split(",") if part.strip()}
    default = ":1:1" if moe else ":1"
    return ", ".join(typed.get(name) or f"{name}{default}" for name in names)


def usable(listing: list[dict[str, Any]]) -> list[str]:
    """Names of the LoRAs that can go into the loaded model (from engine.list_loras(), read once per action)."""
    return [item["name"] for item in listing if item["usable"] and item["fits"]]


def menu_choices(listing: list[dict[str, Any]], keep: list[str] | None = None) -> list[tuple[str, str]]:
    """(label, name) for the menu: the usable LoRAs (and names already chosen); one whose data file has a problem
    says so beside its name (the block under the menu says what, once it is chosen)."""
    items = {item["name"]: item for item in listing}
    names = sorted(set(usable(listing)) | set(keep or []))
    flagged = {n for n in names if n in items and items[n]["usable"] and items[n]["problem"]}
    return [(f"{n} ⚠ check its settings file" if n in flagged else n, n) for n in names]


def about(listing: list[dict[str, Any]], names: list[str], fast: str | None = None) -> str:
    """Trigger words and recommended settings of the chosen LoRAs, in one short block."""
    items = {item["name"]: item for item in listing}
    lines = []
    for name in names:
        item = items.get(name)
        if item is None:
            lines.append(f"**{name}** is not in the LoRA folder any more: put the file back or remove it here.")
            continue
        said = []
        if item["triggers"]:
            said.append("put " + ", ".join(f"`{t}`" for t in item["triggers"]) + " in your prompt")
        if item["recommended"]:
            values = ", ".join(f"{k} {v:g}" for k, v in item["recommended"].items())
            said.append(f"recommends {values} (used where you keep the model's default)")
        if not item["downloaded"]:
            said.append("downloaded on first use")
        lines.append(f"**{name}**: " + ("; ".join(said) if said else "no trigger words"))
        if item["usable"] and item["problem"]:
            lines.append(f"⚠ **{name}**'s settings file: {item['problem']}.")
    if fast:
        lines.insert(0, f"Fast: the 4-step LoRA **{fast}** does the work in a few steps without guidance.")
    return "  \n".join(lines)


def model_settings(engine: Engine, spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """A model's picker (names as the tab's control names): its LoRAs to choose from, nothing chosen."""
    info = "NAME:HIGH:LOW (high-noise and low-noise expert)" if spec.moe else "NAME:STRENGTH"
    return {
        "loras.menu": dict(choices=menu_choices(engine.list_loras()), value=[]),
        "loras.strengths": dict(value="", info=info),
        "loras.about": dict(value=""),
    }


def wire(picker: LoraPicker, engine: Engine, spec_now, quality: gr.Radio) -> None:
    private = {"api_visibility": "private", "queue": False}

    def refresh(chosen: list[str]):
        return gr.update(choices=menu_choices(engine.list_loras(), chosen))

    def chosen(names: list[str], text: str):
        names = list(names or [])
        return strengths_text(names, text, spec_now().moe), about(engine.list_loras(), names)

    def fast(choice: str, names: list[str], text: str):
        if choice != FAST:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        spec = spec_now()
        name = engine.fast_lora()
        if name is None:
            said = (
                f"No 4-step LoRA is known for {spec.label}. Put one in the LoRA folder with "
                '`"distilled": true` in its NAME.json to make it the Fast choice.'
            )
            return "standard", gr.skip(), gr.skip(), said
        names = [*[n for n in (names or []) if n != name], name]
        # the tab's own quality handler puts steps back to the model's default, so the LoRA's recommended steps
        # apply (and the status line says so)
        listing = engine.list_loras()
        return gr.skip(), gr.update(value=names), strengths_text(names, text, spec.moe), about(listing, names, name)

    picker.menu.focus(refresh, picker.menu, picker.menu, **private)
    picker.menu.input(chosen, [picker.menu, picker.strengths], [picker.strengths, picker.about], **private)
    quality.input(
        fast,
        [quality, picker.menu, picker.strengths],
        [quality, picker.menu, picker.strengths, picker.about],
        **private,
    )
