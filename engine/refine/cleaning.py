"""Turning an LLM reply into a bare prompt, judging whether it is usable, and keeping it inside the word bounds.

Chat models wrap answers in preambles, quotes, markdown and notes; Wan2.2's text encoder would read all of that as
part of the scene, so it is cut here, in one place, for every backend.
"""

from __future__ import annotations

import re

# Words per mode: Wan2.2 follows 80-200 word scene descriptions for text-to-video; for image-to-video the image
# already fixes the look, so the prompt is a shorter motion description. The lower bounds only raise a notice for
# LLM replies; the rules refiner always meets them.
WORD_BOUNDS = {"t2v": (80, 200), "i2v": (30, 120)}

# Chinese length is counted the way Chinese writers count it (字数): one character is one word. This is also how
# Wan's own prompt guidance states Chinese lengths.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD = re.compile(r"[^\s" + _CJK + r"]*[0-9A-Za-z\u00c0-\u024f][^\s" + _CJK + r"]*")
_SENTENCE = re.compile(r"[^.!?。！？]*(?:[.!?]+(?=\s|$)|[。！？]+|$)")


def count_words(text: str) -> int:
    """Latin words plus Chinese characters (each counts as one)."""
    return len(_CJK_CHAR.findall(text)) + len(_WORD.findall(text))


def is_chinese(text: str, share: float = 0.3) -> bool:
    """True when Chinese characters make up at least `share` of the counted words."""
    total = count_words(text)
    return total > 0 and len(_CJK_CHAR.findall(text)) / total >= share


def sentences(text: str) -> list[str]:
    """Split after . ! ? (followed by a space or the end) and after 。！？; each keeps its end mark."""
    parts = [m.group(0).strip() for m in _SENTENCE.finditer(text)]
    return [p for p in parts if p]


def join_sentences(parts: list[str]) -> str:
    """Join with a space between Latin sentences and nothing after a Chinese full stop."""
    out = ""
    for part in parts:
        if out and not out.endswith(("。", "！", "？", "，", "：")):
            out += " "
        out += part
    return out


def trim_to_words(text: str, max_words: int) -> tuple[str, bool]:
    """At most `max_words`, cut at a sentence boundary (mid-sentence only when the first sentence alone is over)."""
    if count_words(text) <= max_words:
        return text, False
    kept: list[str] = []
    for sentence in sentences(text):
        if count_words(join_sentences([*kept, sentence])) > max_words:
            break
        kept.append(sentence)
    if kept:
        return join_sentences(kept), True
    # One over-long sentence: cut at the word (or character) limit and close it.
    out, n = [], 0
    for token in re.findall(f"[{_CJK}]|\\S+|\\s+", text):
        n += 1 if token.strip() and (_CJK_CHAR.fullmatch(token) or _WORD.fullmatch(token)) else 0
        if n > max_words:
            break
        out.append(token)
    cut = "".join(out).rstrip(" ,;:，、；：")
    return cut + ("。" if is_chinese(cut) else "."), True


# ----- cleaning --------------------------------------------------------------------------------------------------

_THINK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.S | re.I)
_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.M)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_BULLET = re.compile(r"^\s*(?:[-*+•·]|\d{1,2}[.)、])\s+")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1|(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|`([^`]+)`", re.S)
_NOTE_LINE = re.compile(
    r"^\s*(?:\*\*|__)?\s*(?:notes?|explanation|changes|remarks?|p\.?s\.?|注意?|备注|说明|解释|改动)\s*(?:\*\*|__)?\s*[:：]",
    re.I,
)
_NOTE_TAIL = re.compile(  # "Note: ..." only where a sentence starts or inside an opening bracket
    r"(?:(?<=[.!?。！？])\s*|\s*[(（]\s*)(?:\*\*)?(?:notes?|explanation|p\.s\.|注意?|备注|说明)(?:\*\*)?\s*[:：].*$",
    re.I | re.S,
)
_CLOSING = re.compile(
    r"\s*(?:I hope (?:this|that|it)\b|Hope (?:this|that|it) helps|Let me know\b|Feel free to\b"
    r"|希望(?:这|以上|对你)|如需|如果需要|如有需要).*$",
    re.I | re.S,
)
_PREAMBLES = [
    re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great|alright)\b[!.,]*\s*", re.I),
    re.compile(r"^here(?:'s| is| are)\b[^:：\n]{0,100}[:：]\s*", re.I),
    re.compile(
        r"^(?:the\s+|your\s+|my\s+)?(?:final\s+|new\s+)?(?:refined|rewritten|enhanced|improved|expanded|optimi[sz]ed|video)?"
        r"\s*prompt\s*(?:for wan2?\.?2?)?\s*[:：]\s*",
        re.I,
    ),
    re.compile(r"^(?:好的|当然|没问题|可以)[!！,，。.]*\s*"),
    re.compile(r"^(?:以下是|下面是|这是)[^：:\n]{0,40}[：:]\s*"),
    re.compile(r"^(?:优化|改写|扩写|润色|最终)?后?的?(?:视频)?(?:提示词|prompt)\s*[：:]\s*", re.I),
]
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("「", "」"), ("『", "』"), ("«", "»"), ("`", "`")]


def _strip_quotes(text: str) -> str:
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right) and left not in text[1:-1]:
                text, changed = text[1:-1].strip(), True
    return text


def clean_output(raw: str) -> str:
    """The prompt inside a chat reply: no reasoning, preamble, quotes, markdown or trailing notes, one paragraph."""
    text = _THINK.sub("", raw or "")
    if re.search(r"<think(?:ing)?>", text, re.I):  # an unclosed block: the answer never came
        text = re.split(r"<think(?:ing)?>", text, flags=re.I)[0]
    if re.search(r"</think(?:ing)?>", text, re.I):  # the opening tag was part of the chat template
        text = re.split(r"</think(?:ing)?>", text, flags=re.I)[-1]
    text = _FENCE.sub("", text)
    raw_lines = text.splitlines()
    if any(ln.strip() and not _HEADING.match(ln) for ln in raw_lines):
        raw_lines = [ln for ln in raw_lines if not _HEADING.match(ln)]  # a heading is a label, not part of the scene
    lines: list[str] = []
    for line in raw_lines:
        line = _HEADING.sub("", line)
        line = _BULLET.sub("", line).strip()
        if not line or re.fullmatch(r"[-*_=]{3,}", line):
            continue
        if lines and _NOTE_LINE.match(line):
            break  # a trailing note: it and everything after go
        lines.append(line)
    # A first line that only announces the answer ("Here is the refined prompt:") goes.
    if len(lines) > 1 and re.search(r"[:：]\s*(?:\*\*|__)?$", lines[0]) and count_words(lines[0]) <= 15:
        lines = lines[1:]
    # Lines (often bullets) become sentences of one paragraph.
    text = join_sentences(
        [ln if re.search(r"[.!?。！？:：,，;；]$", ln) else ln + ("。" if is_chinese(ln) else ".") for ln in lines[:-1]]
        + lines[-1:]
    )
    text = _EMPHASIS.sub(lambda m: next(g for g in m.groups()[1:] if g is not None), text)
    text = re.sub(r"\s+", " ", text).strip()
    for _ in range(4):  # preambles can stack: "Sure! Here is the prompt: "..."
        before = text
        for pattern in _PREAMBLES:
            text = pattern.sub("", text).strip()
        text = _strip_quotes(text)
        if text == before:
            break
    text = _CLOSING.sub("", _NOTE_TAIL.sub("", text)).strip()
    return _strip_quotes(text)


# ----- usability -------------------------------------------------------------------------------------------------

_REFUSAL = re.compile(
    r"^(?:I'?m sorry|I am sorry|I can(?:not|'t)|As an AI|I apologi[sz]e|抱歉|对不起|我无法|我不能)", re.I
)
_STOP = set(
    "the a an and or of in on at to with by for from into over under is are was were be its his her their this that"
    " it as very some".split()
)


def _content_words(prompt: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z'-]{2,}", prompt.lower()) if w not in _STOP}


def unusable_reason(text: str, prompt: str, language: str) -> str | None:
    """Why a cleaned reply cannot be used as a prompt (None when it can). Errs towards falling back to rules."""
    if not text.strip():
        return "the reply was empty"
    if _REFUSAL.match(text):
        return "the model declined to answer"
    n = count_words(text)
    if n < 8:
        return f"the reply was too short to be a prompt, {n} words"
    tokens = _CJK_CHAR.findall(text) + [w.lower() for w in _WORD.findall(text)]
    if len(tokens) >= 12 and len(set(tokens)) / len(tokens) < 0.2:
        return "the reply kept repeating itself"
    if language == "zh" and not is_chinese(text):
        return "the reply was not in Chinese"
    if language == "en" and is_chinese(text, 0.5):
        return "the reply was not in English"
    same_script = is_chinese(prompt) == (language == "zh")
    if prompt.strip() and same_script:
        if language == "en":
            words = _content_words(prompt)
            found = {w for w in words if re.search(rf"\b{re.escape(w)}", text.lower())}
            if words and not found:
                return f"the reply lost the subject, none of: {', '.join(sorted(words)[:6])}"
        else:
            chars = set(_CJK_CHAR.findall(prompt))
            if chars and len(chars & set(_CJK_CHAR.findall(text))) < max(1, len(chars) // 3):
                return "the reply lost the subject"
    return None
