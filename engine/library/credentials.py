"""Content credentials (C2PA): every finished MP4 says, in a signed manifest, that AI made it, with what, and the
studio can read any MP4's credentials back in the user's words.

Signing and reading are c2pa-python's (the C2PA reference implementation); this module only decides what the
manifest says, where the key comes from, and what a validation result means. With no key configured, a small local
CA and an ES256 signing certificate are made once in the config folder (owner-only); validators show such
credentials as untrusted, because no trust list knows that CA. A key that cannot be used never costs a video: it is
saved unsigned and says why.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("wan_studio.credentials")
AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# an extension: the source video's frames, then frames a model made (IPTC's term for a mix of both)
COMPOSITE_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
PARENT_ID = "source-video"  # the parent ingredient's label, which the c2pa.opened action names
GENERATION_LABEL = "studio.wan.generation"  # our own assertion: model, LoRAs, storage (settings hold the rest)
LOCAL_ORG = "Wan Studio (local signing key)"


def config_root() -> Path:
    return Path(os.environ.get("WAN_STUDIO_CONFIG", Path.home() / ".config" / "wan-studio"))


@dataclass(frozen=True)
class CredentialOptions:
    enabled: bool = True
    cert: str | None = None  # PEM chain: the signing certificate first, then its issuers
    key: str | None = None  # PEM private key (PKCS#8) of the signing certificate
    include_prompt: bool = False  # prompts may be private: off unless asked
    folder: str | None = None  # the local key's folder; default: config_root()/credentials


class CredentialError(Exception):
    """Signing failed; the message says why in the user's words."""


def _local_chain(folder: Path) -> tuple[bytes, bytes]:
    """(PEM chain, PEM key) of the local signer, made once: a CA and an ES256 certificate for signing."""
    chain_path, key_path = folder / "signer-chain.pem", folder / "signer-key.pem"
    if chain_path.is_file() and key_path.is_file():
        return chain_path.read_bytes(), key_path.read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common), x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORG)]
        )

    def usage(sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(sign, False, False, False, False, ca, ca, False, False)

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("Wan Studio local CA")

    def certificate(subject, public, is_ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650 if is_ca else 1825))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
            .add_extension(usage(not is_ca, is_ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if not is_ca:  # C2PA's certificate profile: a signing certificate names a signing purpose
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256())

    ca = certificate(ca_name, ca_key.public_key(), True)
    cert = certificate(name("Wan Studio on this machine"), key.public_key(), False)
    pem = serialization.Encoding.PEM
    chain = cert.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    for path, data in ((key_path, private), (chain_path, chain), (folder / "ca.pem", ca.public_bytes(pem))):
        temp = path.with_name(f".{path.name}.partial")
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only from the start
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    return chain, private


def _identity(chain: bytes) -> str:
    """Who signs: the signing certificate's organisation and common name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificates(chain)[0]

    def first(oid) -> str:
        found = cert.subject.get_attributes_for_oid(oid)
        return str(found[0].value) if found else ""

    org, common = first(NameOID.ORGANIZATION_NAME), first(NameOID.COMMON_NAME)
    return f"{common} ({org})" if org and common and org != common else (common or org or "an unnamed certificate")


class Credentials:
    """The studio's signer, set up once at launch; `problem` says (once) why videos will be saved unsigned."""

    def __init__(self, options: CredentialOptions | None = None):
        self.options = options or CredentialOptions()
        self.problem: str | None = None
        self.identity = ""
        self.local = False
        self._material: tuple[bytes, bytes] | None = None
        if not self.options.enabled:
            return
        try:
            if self.options.cert or self.options.key:
                if not (self.options.cert and self.options.key):
                    raise CredentialError("--credentials-cert and --credentials-key must be given together")
                chain = Path(self.options.cert).expanduser().read_bytes()
                key = Path(self.options.key).expanduser().read_bytes()
            else:
                folder = Path(self.options.folder) if self.options.folder else config_root() / "credentials"
                chain, key = _local_chain(folder)
                self.local = True
            self._signer(chain, key)  # refuses a key and certificate that do not work together, now
            self.identity = _identity(chain)
            self._material = (chain, key)
        except OSError as exc:
            where = exc.filename or "the credentials folder"
            self.problem = f"the signing key could not be read or created ({where}: {exc.strerror or exc})"
        except Exception as exc:  # noqa: BLE001 - cryptography and c2pa raise many types for a bad key or chain
            self.problem = f"the signing key or certificate cannot be used ({_first_line(exc)})"

    @property
    def active(self) -> bool:
        return self._material is not None

    def describe(self) -> str:
        """One line for the terminal and the header."""
        if not self.options.enabled:
            return "Content credentials are off (--no-credentials): videos are saved unsigned."
        if self.problem:
            return f"Content credentials: {self.problem}. Videos are saved unsigned until this is fixed."
        trust = " (a local certificate: validators show it as untrusted)" if self.local else ""
        return f"Videos are signed with content credentials by {self.identity}{trust}."

    @staticmethod
    def _signer(chain: bytes, key: bytes):
        import c2pa

        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))

    def unsigned(self) -> dict[str, Any]:
        """The settings' record for a video saved without credentials, and why."""
        reason = "turned off (--no-credentials)" if not self.options.enabled else self.problem
        return {"signed": False, "reason": reason}

    def sign(
        self,
        source: Path,
        target: Path,
        facts: dict[str, Any],
        image: Any = None,
        parent: tuple[str, bytes] | None = None,
        last_image: Any = None,
    ) -> dict[str, Any]:
        """Write `source` with a signed manifest to `target`; returns the settings' record. Raises CredentialError.

        `parent` (file name, bytes) is the video an extension continues: it becomes the manifest's parent
        ingredient, with its own credentials when it has any, so a reader can follow which frames came from where.
        """
        if self._material is None:
            raise CredentialError(self.unsigned()["reason"] or "no signing key")
        import c2pa

        definition = manifest(facts, self.options.include_prompt)
        try:
            builder = c2pa.Builder.from_json(definition)
            if parent is not None:
                name, data = parent
                about = {"title": name, "relationship": "parentOf", "label": PARENT_ID}
                try:  # the parent's bytes: c2pa hashes them and carries the parent's own credentials along
                    builder.add_ingredient(about, "video/mp4", io.BytesIO(data))
                except c2pa.C2paError:  # a WebM or MKV c2pa cannot parse: named; its sha256 is in our assertion
                    definition["ingredients"] = [{**about, "format": "application/octet-stream"}]
                    builder = c2pa.Builder.from_json(definition)
            for picture, title in ((image, "input image"), (last_image, "last frame image")):
                if picture is None:
                    continue
                png = io.BytesIO()
                picture.save(png, format="PNG")
                png.seek(0)
                builder.add_ingredient({"title": title, "relationship": "inputTo"}, "image/png", png)
            with open(source, "rb") as src, open(target, "w+b") as dst:
                builder.sign(self._signer(*self._material), "video/mp4", src, dst)
                dst.flush()
                os.fsync(dst.fileno())
        except Exception as exc:  # noqa: BLE001 - any failure here must leave the video saved, unsigned
            raise CredentialError(f"signing failed ({_first_line(exc)})") from exc
        return {
            "signed": True,
            "signer": self.identity,
            "local_certificate": self.local,
            "digital_source_type": COMPOSITE_SOURCE_TYPE if parent is not None else AI_SOURCE_TYPE,
            "parent": None if parent is None else parent[0],
            "prompt_included": self.options.include_prompt,
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__.lstrip('_')}: {text[0][:200]}" if text else exc.__class__.__name__


def manifest(facts: dict[str, Any], include_prompt: bool) -> dict[str, Any]:
    """The C2PA manifest: created by a trained algorithm, with the generator and the model that made it."""
    generator = {"name": "Wan Studio", "version": str(facts.get("app_version", ""))}
    model = {k: facts.get(k) for k in ("model", "model_source", "model_revision") if facts.get(k) is not None}
    generation: dict[str, Any] = {"model": model}
    if facts.get("loras"):
        generation["loras"] = facts["loras"]
    if facts.get("weights"):
        generation["weights"] = facts["weights"]
    if include_prompt:
        generation["prompt"] = facts.get("prompt")
    if facts.get("image"):
        generation["input_image"] = facts["image"]
    made_with = {"model": model.get("model_source") or model.get("model")}
    source = facts.get("source")
    if source:  # an extension: the source opened, then frames made after its own
        generation["source"] = source
        actions = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [PARENT_ID]}},
            {
                "action": "c2pa.edited",
                "digitalSourceType": COMPOSITE_SOURCE_TYPE,
                "softwareAgent": generator,
                "description": (
                    f"{facts.get('added_frames')} frames made by a trained model after the source's "
                    f"{source.get('frames')} frames, which are kept as they were (scaled to the video's size)"
                ),
                "parameters": made_with,
            },
        ]
    else:
        actions = [
            {"action": "c2pa.created", "digitalSourceType": AI_SOURCE_TYPE, "softwareAgent": generator,
             "parameters": made_with}
        ]  # fmt: skip
    return {
        "claim_generator_info": [generator],
        # the file name may carry a slug of the prompt (--filenames prompt): the title does only when the prompt may
        "title": facts.get("title" if include_prompt else "plain_title") or "video.mp4",
        "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


def facts_from_settings(
    settings: dict[str, Any], title: str, image_sha256: str | None = None, plain_title: str | None = None
) -> dict[str, Any]:
    """What the manifest states, from the video's settings: the model, LoRAs (name, files' sha256), storage.

    `title` is the file name; `plain_title` the same name without the prompt's slug (time, seed and a counter)."""
    loras = [
        {"name": item.get("name"), "files": {k: f.get("sha256") for k, f in (item.get("files") or {}).items()}}
        for item in settings.get("loras") or []
    ]
    weights = {
        name: {k: v for k, v in entry.items() if k in ("storage", "file", "sha256")}
        for name, entry in (settings.get("weights") or {}).items()
        if entry.get("storage") not in ("fp32", "bf16", "fp16") or entry.get("file")
    }
    image = settings.get("image")
    source = settings.get("source")
    return {
        "source": None if not source else {k: source.get(k) for k in ("name", "sha256", "frames")},
        "added_frames": (settings.get("request") or {}).get("frames"),
        "app_version": settings.get("app_version"),
        "model": settings.get("model"),
        "model_source": settings.get("model_source"),
        "model_revision": settings.get("model_revision"),
        "loras": loras,
        "weights": weights,
        "prompt": (settings.get("request") or {}).get("prompt"),
        "image": None if not image else {**image, "sha256": image_sha256},
        "title": title,
        "plain_title": plain_title,
    }


# ----- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialCheck:
    status: str  # signed | altered | invalid | none | unreadable
    summary: str  # in the user's words
    signer: str = ""
    ai_generated: bool = False
    generator: str = ""
    model: str = ""
    problems: list[str] = field(default_factory=list)  # c2pa's failure codes


_MEANING = {
    "assertion.bmffHash.mismatch": "the video's data has changed since it was signed",
    "assertion.dataHash.mismatch": "the file's data has changed since it was signed",
    "claimSignature.mismatch": "the signature does not match the credentials",
    "signingCredential.expired": "the signing certificate had expired",
    "signingCredential.revoked": "the signing certificate was revoked",
}


def check(path: str | Path) -> CredentialCheck:
    """Read and validate a file's content credentials with c2pa's Reader, and say what they mean."""
    import c2pa

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        return CredentialCheck("unreadable", f"{path.name} is not an MP4 video: the studio checks MP4 files.")
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader("video/mp4", f)
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            store = json.loads(reader.json())
    except OSError as exc:
        return CredentialCheck("unreadable", f"{path.name} could not be read ({exc.strerror or exc}).")
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return CredentialCheck("none", f"{path.name} carries no content credentials: nothing says how it was made.")
        return CredentialCheck(
            "unreadable", f"{path.name} is not a readable MP4 video (it may be damaged, or another kind of file)."
        )
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    info = active.get("signature_info") or {}
    signer = " / ".join(x for x in (info.get("common_name"), info.get("issuer")) if x) or "an unnamed signer"
    actions = [
        a
        for assertion in active.get("assertions") or []
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for a in (assertion.get("data") or {}).get("actions") or []
    ]
    kinds = [str(a.get("digitalSourceType", "")) for a in actions]
    ai = any(k.endswith(("/trainedAlgorithmicMedia", "TrainedAlgorithmicMedia")) for k in kinds)
    composite = any(k.endswith("compositeWithTrainedAlgorithmicMedia") for k in kinds)
    generators = active.get("claim_generator_info") or []
    generator = " ".join(str(g.get(k, "")) for g in generators[:1] for k in ("name", "version")).strip()
    model = next((str(a["parameters"]["model"]) for a in actions if (a.get("parameters") or {}).get("model")), "")
    failures = [f.get("code", "") for f in (results.get("activeManifest") or {}).get("failure") or []]
    problems = [c for c in failures if c != "signingCredential.untrusted"]
    made = "AI-generated (trained algorithmic media)" if ai else "not marked as AI-generated"
    if composite:
        parents = [i.get("title") for i in active.get("ingredients") or [] if i.get("relationship") == "parentOf"]
        made = "partly AI-generated: frames made by a trained model added to " + (
            f"the video {parents[0]}" if parents and parents[0] else "another video"
        )
    by = f" by {generator}" if generator else ""
    what = f"{made}{by}" + (f", model {model}" if model else "")
    untrusted = "signingCredential.untrusted" in failures
    trust = " The signer is not on a trust list, so validators show it as untrusted." if untrusted else ""
    if any(c.endswith(".mismatch") for c in problems):
        meaning = "; ".join(_MEANING.get(c, c) for c in problems)
        return CredentialCheck(
            "altered",
            f"Altered since signing: {meaning}. The credentials (signed by {signer}) no longer describe this file.",
            signer, ai, generator, model, problems,
        )  # fmt: skip
    if problems or state == "Invalid":
        meaning = "; ".join(_MEANING.get(c, c) for c in problems) or "c2pa reports them invalid"
        return CredentialCheck(
            "invalid", f"Credentials present but not valid: {meaning}.", signer, ai, generator, model, problems
        )
    return CredentialCheck(
        "signed",
        f"Signed by {signer}: {what}. Not altered since signing.{trust}",
        signer, ai, generator, model, failures,
    )  # fmt: skip
