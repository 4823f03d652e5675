"""Content credentials: what the signed manifest says (read back with c2pa's own Reader), tampering, a
bring-your-own certificate, and every way of ending up unsigned still saving the video and saying why."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import c2pa
import pytest

from engine import CredentialOptions, Done, GenerationRequest, Notice, check_credentials, list_videos
from engine.library.credentials import AI_SOURCE_TYPE, GENERATION_LABEL


def request(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a secret product launch", width=64, height=64, frames=5, steps=2, seed=3).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def make(engine, **kw) -> tuple[Done, list[str]]:
    job = engine.submit(request(**kw))
    end = job.wait(300)
    assert isinstance(end, Done), end
    return end, [e.message for e in job.history() if isinstance(e, Notice)]


def manifest_of(path: str) -> tuple[dict, dict, str]:
    with open(path, "rb") as f:
        reader = c2pa.Reader("video/mp4", f)
        store = json.loads(reader.json())
        return (
            store["manifests"][store["active_manifest"]],
            reader.get_validation_results(),
            reader.get_validation_state(),
        )


def assertion(manifest: dict, label: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == label)


def organisation_chain(folder: Path, company: str) -> tuple[Path, Path]:
    """A company's own CA and ES256 signing certificate, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{company} Root")])
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Video Desk"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, company)]
    )

    def build(name, public, ca: bool):
        b = (
            x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True)
        )  # fmt: skip
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        return b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca, cert = build(ca_name, ca_key.public_key(), True), build(subject, key.public_key(), False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chain.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "key.pem").write_bytes(private)
    return folder / "chain.pem", folder / "key.pem"


# ----- what the manifest says ------------------------------------------------------------------------------------


def test_every_video_carries_a_manifest_saying_ai_made_it_with_which_model(make_engine):
    end, notices = make(make_engine())
    manifest, _results, state = manifest_of(end.path)
    actions = assertion(manifest, "c2pa.actions.v2")["actions"]
    created = next(a for a in actions if a["action"] == "c2pa.created")
    assert created["digitalSourceType"] == AI_SOURCE_TYPE
    assert manifest["claim_generator_info"][0]["name"] == "Wan Studio"
    assert assertion(manifest, GENERATION_LABEL)["model"]["model"] == "tiny-ti2v"
    assert state == "Valid"
    assert end.settings["credentials"]["signed"] is True
    assert not any("content credentials" in n for n in notices)


PRIVATE_PROMPT = "Quixotic lighthouse zephyr marmalade"  # words no manifest would hold by chance


def whole_store(path: str) -> str:
    """Everything c2pa's Reader reports for the file (every manifest, ingredient and assertion), lower-cased."""
    with open(path, "rb") as f:
        return c2pa.Reader("video/mp4", f).json().lower()


@pytest.mark.parametrize("with_image", [False, True], ids=["text to video", "image to video"])
def test_no_word_of_the_prompt_is_anywhere_in_the_credentials_by_default(make_engine, tmp_path, with_image):
    from PIL import Image

    image = None
    if with_image:
        image = tmp_path / f"{PRIVATE_PROMPT.replace(' ', '-')}.png"  # a picture named after the prompt, too
        Image.new("RGB", (64, 64), (20, 90, 160)).save(image)
    end, _ = make(make_engine(), prompt=PRIVATE_PROMPT, image=None if image is None else str(image))
    assert "quixotic-lighthouse" in Path(end.path).name  # the default file name carries it (README says so)
    store = whole_store(end.path)
    assert [word for word in PRIVATE_PROMPT.lower().split() if word in store] == []


def test_the_prompt_and_the_named_title_are_in_the_credentials_when_asked(make_engine):
    end, _ = make(make_engine(credentials=CredentialOptions(include_prompt=True)), prompt=PRIVATE_PROMPT)
    manifest = manifest_of(end.path)[0]
    assert assertion(manifest, GENERATION_LABEL)["prompt"] == PRIVATE_PROMPT
    assert manifest["title"] == Path(end.path).name


def test_plain_file_names_hold_time_seed_and_a_counter_only(make_engine):
    engine = make_engine(filenames="plain")
    first, _ = make(engine, prompt=PRIVATE_PROMPT)
    second, _ = make(engine, prompt=PRIVATE_PROMPT)
    for end in (first, second):
        stamp, seed, counter = Path(end.path).stem.split("_")
        assert len(stamp) == 15 and seed == "3" and counter.isdigit()
        assert manifest_of(end.path)[0]["title"] == Path(end.path).name
    assert first.path != second.path


def test_with_plain_names_and_no_embedded_prompt_no_byte_of_the_file_carries_the_prompt(make_engine):
    from engine import read_settings
    from engine.library.output import read_embedded_settings

    end, _ = make(make_engine(filenames="plain", embed_prompt=False), prompt=PRIVATE_PROMPT)
    data, name = Path(end.path).read_bytes().lower(), Path(end.path).name.lower()
    assert [w for w in PRIVATE_PROMPT.lower().split() if w.encode() in data or w in name] == []
    embedded = read_embedded_settings(end.path)
    assert embedded["model"] == "tiny-ti2v" and embedded["request"]["seed"] == 3  # numbers still travel
    assert read_settings(end.path)["request"]["prompt"] == PRIVATE_PROMPT  # the JSON beside it keeps everything


def test_an_unknown_file_naming_is_refused_at_once(make_engine):
    with pytest.raises(ValueError, match="prompt, plain"):
        make_engine(filenames="slug")


def test_an_image_to_video_take_names_its_input_image_as_an_ingredient(make_engine, tmp_path):
    from PIL import Image

    picture = tmp_path / "input.png"
    Image.new("RGB", (96, 64), (200, 120, 40)).save(picture)
    end, _ = make(make_engine(), image=str(picture))
    manifest = manifest_of(end.path)[0]
    assert [i["relationship"] for i in manifest["ingredients"]] == ["inputTo"]
    assert len(assertion(manifest, GENERATION_LABEL)["input_image"]["sha256"]) == 64


def test_the_studio_reads_its_own_credentials_back_in_plain_words(make_engine):
    end, _ = make(make_engine())
    found = check_credentials(end.path)
    assert found.status == "signed" and found.ai_generated and found.model == "tiny-ti2v"
    assert "Not altered since signing" in found.summary and "untrusted" in found.summary


def test_changing_one_byte_of_the_video_data_reports_a_mismatch(make_engine, tmp_path):
    end, _ = make(make_engine())
    data = bytearray(Path(end.path).read_bytes())
    data[data.find(b"mdat") + 64] ^= 0x01
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(data)
    _manifest, results, _state = manifest_of(str(tampered))
    assert "assertion.bmffHash.mismatch" in [f["code"] for f in results["activeManifest"]["failure"]]
    found = check_credentials(tampered)
    assert found.status == "altered" and "changed since it was signed" in found.summary


def test_an_organisations_own_certificate_signs_with_its_identity(make_engine, tmp_path):
    chain, key = organisation_chain(tmp_path / "org", "Example Media Ltd")
    engine = make_engine(credentials=CredentialOptions(cert=str(chain), key=str(key)))
    assert engine.credentials.problem is None and not engine.credentials.local
    end, _ = make(engine)
    info = manifest_of(end.path)[0]["signature_info"]
    assert info["issuer"] == "Example Media Ltd" and info["common_name"] == "Video Desk"
    assert "Example Media Ltd" in check_credentials(end.path).summary


# ----- unsigned, and saying so -----------------------------------------------------------------------------------


def unsigned_but_saved(engine, reason_words: str) -> None:
    end, notices = make(engine)
    assert Path(end.path).is_file() and [str(v.path) for v in list_videos(engine.outputs)] == [end.path]
    assert end.settings["credentials"]["signed"] is False
    assert reason_words in end.settings["credentials"]["reason"]
    assert any(n.startswith("Saved without content credentials") and reason_words in n for n in notices)
    assert check_credentials(end.path).status == "none"


def test_with_credentials_off_the_video_is_saved_and_says_so(make_engine):
    unsigned_but_saved(make_engine(credentials=CredentialOptions(enabled=False)), "turned off")


def test_a_broken_key_is_reported_once_and_the_video_is_saved_unsigned(make_engine, tmp_path):
    chain, _key = organisation_chain(tmp_path / "org", "Example Media Ltd")
    broken = tmp_path / "broken-key.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    engine = make_engine(credentials=CredentialOptions(cert=str(chain), key=str(broken)))
    assert "cannot be used" in engine.credentials.problem
    assert "saved unsigned" in engine.credentials.describe()
    unsigned_but_saved(engine, "cannot be used")


def test_a_config_folder_that_cannot_be_written_saves_the_video_unsigned(make_engine, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the config folder should be")  # as root, chmod would not stop a write
    engine = make_engine(credentials=CredentialOptions(folder=str(blocked / "credentials")))
    assert "could not be read or created" in engine.credentials.problem
    unsigned_but_saved(engine, "could not be read or created")


def test_the_local_key_is_made_once_owner_only(make_engine, tmp_path):
    folder = tmp_path / "creds"
    first = make_engine(credentials=CredentialOptions(folder=str(folder)))
    key = (folder / "signer-key.pem").read_bytes()
    make_engine(credentials=CredentialOptions(folder=str(folder)))
    assert (folder / "signer-key.pem").read_bytes() == key
    assert (folder / "signer-key.pem").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert first.credentials.local


# ----- checking any file -----------------------------------------------------------------------------------------


def test_checking_a_file_without_credentials_says_there_are_none(make_engine):
    end, _ = make(make_engine(credentials=CredentialOptions(enabled=False)))
    found = check_credentials(end.path)
    assert found.status == "none" and "carries no content credentials" in found.summary


@pytest.mark.parametrize(
    "name, data, words",
    [("notes.txt", b"hello", "is not an MP4"), ("fake.mp4", b"not a video at all" * 20, "not a readable MP4")],
    ids=["text file", "renamed to mp4"],
)
def test_checking_a_file_that_is_not_an_mp4_gives_a_clear_answer(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    found = check_credentials(path)
    assert found.status == "unreadable" and words in found.summary


# ----- an extension -------------------------------------------------------------------------------------------------


def test_an_extension_names_its_source_as_parent_and_says_it_added_frames_to_it(make_engine, tmp_path):
    from engine.library.credentials import COMPOSITE_SOURCE_TYPE

    engine = make_engine()
    source, _ = make(engine, frames=9)
    end, _ = make(engine, prompt="and then", video=source.path, frames=8)
    manifest, results, state = manifest_of(end.path)
    parent = next(i for i in manifest["ingredients"] if i["relationship"] == "parentOf")
    assert parent["title"] == Path(source.path).name
    assert parent.get("active_manifest")  # the source's own credentials came along with it
    actions = assertion(manifest, "c2pa.actions.v2")["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == COMPOSITE_SOURCE_TYPE and "8 frames" in actions[1]["description"]
    assert assertion(manifest, GENERATION_LABEL)["source"]["sha256"] == end.settings["source"]["sha256"]
    assert state == "Valid"
    said = check_credentials(end.path)
    assert said.status == "signed" and said.ai_generated and Path(source.path).name in said.summary


def test_a_source_c2pa_cannot_parse_is_still_named_as_parent(make_engine, tmp_path):
    import imageio_ffmpeg
    import numpy as np

    frames = np.full((8, 64, 64, 3), 90, np.uint8)
    webm = tmp_path / "clip.webm"
    writer = imageio_ffmpeg.write_frames(str(webm), (64, 64), fps=8, codec="libvpx-vp9", macro_block_size=1)
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    end, notices = make(make_engine(), prompt="on", video=str(webm), frames=4)
    manifest, _results, state = manifest_of(end.path)
    assert [i["title"] for i in manifest["ingredients"] if i["relationship"] == "parentOf"] == ["clip.webm"]
    assert state == "Valid" and not any("content credentials" in n for n in notices)
