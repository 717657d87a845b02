"""The container image, without a Docker engine: the Dockerfile's facts, then its install steps for real.

The image is built from the same three commands the Dockerfile runs; the test runs them in a fresh
folder holding only what the Dockerfile copies, installs into a fresh virtual environment, and runs
the console script from it as the image would (non-root uid, code not writable, no bytecode writes).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
# The build steps, as written in the Dockerfile's build stage (checked below) and run by this test.
WHEEL_CMD = "pip wheel --no-deps --wheel-dir /dist ."
VENV_CMD = "python -m venv --without-pip /opt/venv"
INSTALL_CMD = "pip --python /opt/venv/bin/python install --no-compile --only-binary :all: /dist/edgelake_sidecar-*.whl"
PRUNE_CMD = "/opt/venv/bin/python docker/prune_venv.py"
COMPILE_CMD = "/opt/venv/bin/python -m compileall -q /opt/venv/lib"
BUILD_CMDS = (WHEEL_CMD, VENV_CMD, INSTALL_CMD, PRUNE_CMD, COMPILE_CMD)
BUILD_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
COMPILERS = {"gcc", "g++", "cc", "c++", "clang", "make", "build-essential", "cpp", "libc6-dev", "python3-dev",
             "cargo", "rustc", "gfortran"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(text):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def args_defaults(text: str) -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    defaults = {}
    for word, rest in instructions(text):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_final_stage_python_matches_the_tested_python(dockerfile: str) -> None:
    image = args_defaults(dockerfile)["PYTHON_IMAGE"]
    assert image.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"), image
    froms = [s[0][1] for s in stages(dockerfile)]
    assert len(froms) == 2, "a build stage and a final stage"
    assert froms[0] == "${PYTHON_IMAGE} AS build" and froms[1] == "${PYTHON_IMAGE}"


def test_final_stage_runs_as_a_named_non_root_numeric_user(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, users
    runs = " ".join(rest for word, rest in final if word == "RUN")
    # OpenSSH refuses a uid that has no passwd entry: the account must exist with that number.
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs
    # Kubernetes' runAsNonRoot needs a numeric USER, and the chart runs the same uid.
    values = (ROOT / "charts" / "edgelake-node" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values and f"fsGroup: {gid}" in values


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    packages: set[str] = set()
    for word, rest in stage:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            tokens = shlex.split(command)
            if tokens[:2] == ["apt-get", "install"]:
                assert "--no-install-recommends" in tokens, command  # recommends pull in compilers
                packages.update(t for t in tokens[2:] if not t.startswith("-"))
    return packages


def test_final_stage_has_git_ssh_certificates_and_no_compilers(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    packages = apt_packages(final)
    assert {"git", "openssh-client", "ca-certificates"} <= packages
    assert not packages & COMPILERS
    final_text = " ".join(rest for _, rest in final)
    assert "pip " not in final_text  # nothing is built or installed by pip in the final stage
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_build_stage_runs_the_commands_this_test_runs(dockerfile: str) -> None:
    build = stages(dockerfile)[0]
    runs = [rest for word, rest in build if word == "RUN"]
    assert runs == list(BUILD_CMDS)
    env = " ".join(rest for word, rest in build if word == "ENV")
    for name, value in BUILD_ENV.items():
        assert f"{name}={value}" in env
    copies = [rest for word, rest in build if word == "COPY"]
    assert copies == ["pyproject.toml README.md ./", "sidecar ./sidecar", "docker/prune_venv.py ./docker/"]


def test_read_only_root_filesystem_friendly(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env  # the one writable mount the chart gives the sidecar
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_what_the_build_copies(dockerfile: str) -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "charts"} <= ignored
    for word, rest in stages(dockerfile)[0]:
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert source not in ignored, source


def entrypoint(dockerfile: str) -> list[str]:
    final = stages(dockerfile)[-1]
    value = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert len(value) == 1
    parsed: list[str] = json.loads(value[0])  # exec form: signals reach the process, no shell between
    return parsed


# ---- the wheel, installed the Dockerfile's way, run as the image runs it ---------------------------------

IMAGE_UID = 10001


def image_like_python() -> tuple[str, bool]:
    """The interpreter for the venv, and whether the venv can run as the image's uid.

    As root with setpriv, the venv is built on a system Python of the tested version that uid 10001
    can execute (this checkout's own Python may live under /root, closed to other users), and the
    sidecar then runs as uid 10001 with its code read-only, as in the image. Otherwise it runs as the
    current user.
    """
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if os.geteuid() == 0 and shutil.which("setpriv") and system.exists():
        return str(system), True
    return sys.executable, False


@pytest.fixture(scope="module")
def installed() -> Iterator[dict[str, Any]]:
    """The three build commands, run in a folder holding exactly what the Dockerfile copies."""
    python, as_image_uid = image_like_python()
    base = Path(tempfile.mkdtemp(prefix="edgelake-image-"))
    base.chmod(0o755)  # reachable for the image's uid
    src, dist, venv = base / "src", base / "dist", base / "venv"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "sidecar", src / "sidecar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docker", src / "docker", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, **BUILD_ENV}
    for command in BUILD_CMDS:
        argv = shlex.split(command.replace("/opt/venv", str(venv)).replace("/dist", str(dist)))
        if argv[0] == "pip":
            argv = [sys.executable, "-m", *argv]
        elif argv[0] == "python":
            argv[0] = python
        argv = [a for pattern in argv for a in (sorted(map(str, dist.glob(Path(pattern).name)))
                                                if pattern.endswith("*.whl") else [pattern])]
        result = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    wheels = list(dist.glob("edgelake_sidecar-*.whl"))
    assert len(wheels) == 1
    for path in [venv, *venv.rglob("*")]:  # the image's code is not writable by the sidecar
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    yield {"venv": venv, "wheel": wheels[0], "base": base, "as_image_uid": as_image_uid}
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    shutil.rmtree(base)


def test_entrypoint_is_a_console_script_of_the_wheel(dockerfile: str, installed: dict[str, Any]) -> None:
    argv = entrypoint(dockerfile)
    assert argv[:2] == ["/usr/bin/tini", "--"]  # PID 1 that reaps git's orphaned ssh children
    script = argv[2]
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(wheel.read(name).decode())
    assert script in entry_points["console_scripts"]
    assert (installed["venv"] / "bin" / script).exists()
    final = stages(dockerfile)[-1]
    assert [rest for word, rest in final if word == "CMD"] == ['["run"]']


def workdir(installed: dict[str, Any], name: str) -> Path:
    """A folder the image's uid can write, as fsGroup makes the pod's volumes."""
    path: Path = installed["base"] / name
    path.mkdir()
    path.chmod(0o777)
    return path


def run_as_image(installed: dict[str, Any], args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as the image does: its PATH and env, uid 10001 where possible."""
    venv: Path = installed["venv"]
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
           "HOME": str(home), "SIDECAR_KUBE": "off", "SIDECAR_LOG_FORMAT": "json"}
    argv = [str(venv / "bin" / "edgelake-sidecar"), *args]
    if installed["as_image_uid"]:
        argv = ["setpriv", "--reuid", str(IMAGE_UID), "--regid", str(IMAGE_UID), "--clear-groups", *argv]
    before = sorted(venv.rglob("*"))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert sorted(venv.rglob("*")) == before, "the run wrote inside the installed code"
    return result


def test_installed_version_runs(installed: dict[str, Any]) -> None:
    result = run_as_image(installed, ["version"], workdir(installed, "home-version"))
    assert result.returncode == 0, result.stderr
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert result.stdout.strip() == f"edgelake-sidecar {version.group(1)}"
    assert f"ARG VERSION={version.group(1)}" in DOCKERFILE.read_text()


def test_installed_seed_publishes_the_fallback(installed: dict[str, Any]) -> None:
    if not (ROOT / "sidecar" / "scripts" / "seed.py").exists():
        pytest.skip("sidecar/scripts/seed.py not in this checkout yet: `seed` is not implemented")
    home, volume = workdir(installed, "home-seed"), workdir(installed, "volume")
    fallback = installed["base"] / "fallback"
    shutil.copytree(ROOT / "examples" / "deployment-scripts", fallback)  # readable by the image's uid
    link = volume / "deployment-scripts"
    result = run_as_image(installed, ["seed", "--fallback-dir", str(fallback), "--link", str(link)], home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert link.is_symlink()
    main = link / "node-deployment" / "main.al"
    assert main.read_text() == (fallback / "node-deployment" / "main.al").read_text()


def site_packages(installed: dict[str, Any]) -> Path:
    return next(installed["venv"].glob("lib/python3*/site-packages"))


def test_pruning_keeps_only_what_the_sidecar_imports(installed: dict[str, Any]) -> None:
    site = site_packages(installed)
    client = site / "kubernetes"
    kept = sorted(str(p.relative_to(client)) for p in client.rglob("*.py"))
    # What the sidecar loads of the client: the kubeconfig loader and its Configuration (sidecar/kube).
    assert "config/kube_config.py" in kept and "client/configuration.py" in kept
    assert not (client / "client" / "models").exists() and not (client / "aio").exists()
    assert len(kept) < 20, kept
    assert not (site / "pydantic").exists() and not (site / "pydantic_core").exists()  # only the models use it
    assert (site / "urllib3").is_dir() and (site / "yaml").is_dir()  # the client's transport and kubeconfig need them
    # Compiled once at build: the image's root filesystem is read-only, so nothing compiles at start.
    assert list((client / "config" / "__pycache__").glob("kube_config.cpython-*.pyc"))
    assert list((site / "sidecar" / "__pycache__").glob("cli.cpython-*.pyc"))
    size = sum(p.stat().st_size for p in installed["venv"].rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 60_000_000, size  # 168 MB unpruned


def test_prune_check_fails_when_a_used_module_is_missing(installed: dict[str, Any], tmp_path: Path) -> None:
    """Control: the check the build runs really imports the client modules (one removed: it fails)."""
    copy = tmp_path / "venv"
    shutil.copytree(installed["venv"], copy, symlinks=True)
    for path in [copy, *copy.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    loader = next(copy.glob("lib/python3*/site-packages")) / "kubernetes" / "config" / "kube_config.py"
    loader.unlink()
    for cached in loader.parent.glob("__pycache__/kube_config.*"):
        cached.unlink()
    result = subprocess.run([str(copy / "bin" / "python"), str(ROOT / "docker" / "prune_venv.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "cannot import what the sidecar uses" in result.stderr and "kube_config" in result.stderr
