"""The container images, as far as they can be checked without building them (no
registry is reachable here): every file they copy exists and is not excluded from the
build context, they install the project the way CI does, their Ray and Python match
the project's pins and the KubeRay manifest, and the manifest runs the images the
build instructions produce."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

import pytest
import yaml

from tests.support.paths import ROOT

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


def instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell command line."""
    found = []
    for line in re.sub(r"\\\n", " ", command).splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";"):
                if current[:2] == ["pip", "install"]:
                    found.append(current[2:])
                current = []
            else:
                current.append(word)
    return found


def project_target(args: list[str]) -> tuple[str, set[str]] | None:
    """("." , extras) when these pip arguments install the repo itself, else None."""
    for arg in args:
        if arg.startswith("-"):
            continue
        match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", arg)
        if match:
            return ".", set(filter(None, (match.group(1) or "").split(",")))
    return None


def dockerignore() -> list[str]:
    return [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile):
    copies = [args for word, args in instructions(dockerfile) if word == "COPY"]
    assert copies
    ignored = dockerignore()
    for args in copies:
        sources = [w for w in shlex.split(args) if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the repo"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                f"{dockerfile} copies {source} but .dockerignore excludes it"
            )
    # Everything the package build reads is copied.
    copied = {w for args in copies for w in shlex.split(args) if not w.startswith("--")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"{dockerfile} does not copy package {pattern}"
    assert {"pyproject.toml", "README.md"} <= copied


@pytest.mark.parametrize("dockerfile, extras", [("Dockerfile", set()), ("Dockerfile.gpu", {"gpu"})])
def test_the_images_install_the_project_as_ci_does(dockerfile, extras):
    ci = [project_target(a) for a in pip_installs((ROOT / ".ci" / "run").read_text())]
    ci = [t for t in ci if t]
    assert ci == [(".", {"test"})], "CI's install of the project changed: update the images to match"
    runs = [args for word, args in instructions(dockerfile) if word == "RUN"]
    targets = [project_target(a) for cmd in runs for a in pip_installs(cmd)]
    # Installed once, from this repo's pyproject, with CI's dependencies (only the
    # test extra dropped) plus the image's own extra.
    assert [t for t in targets if t] == [(".", extras)], targets
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared)


def test_base_images_match_the_pinned_ray_and_python_and_the_manifest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray_pin,) = [d for d in project["dependencies"] if d.startswith("ray[")]
    ray_minor = re.search(r">=(\d+\.\d+)", ray_pin).group(1)
    manifest = yaml.safe_load((ROOT / "cluster" / "rayservice.yaml").read_text())
    ray_version = manifest["spec"]["rayClusterConfig"]["rayVersion"]
    assert ray_version.startswith(ray_minor + ".")
    for dockerfile in DOCKERFILES:
        (base,) = [args for word, args in instructions(dockerfile) if word == "FROM"]
        match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-gpu)?", base)
        assert match, f"{dockerfile}: unexpected base {base}"
        assert match.group(1) == ray_version, f"{dockerfile} is Ray {match.group(1)}, the manifest {ray_version}"
        assert (match.group(4) is not None) == dockerfile.endswith(".gpu")
        assert f"{match.group(2)}.{match.group(3)}" == "3.11"


def built_image(dockerfile: str) -> str:
    """The tag the Dockerfile's own header says to build it with."""
    (tag,) = re.findall(r"docker build .*-t (\S+) \.", (ROOT / dockerfile).read_text())
    return tag


def test_the_manifest_runs_the_images_the_instructions_build():
    tags = {built_image(d) for d in DOCKERFILES}
    manifest = yaml.safe_load((ROOT / "cluster" / "rayservice.yaml").read_text())
    spec = manifest["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images == tags, (images, tags)
    # GPU groups run the GPU image.
    for group in spec["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            wants_gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
            assert (container["image"] == built_image("Dockerfile.gpu")) == wants_gpu, group["groupName"]
    # The READMEs show the same build commands.
    guide = (ROOT / "cluster" / "README.md").read_text()
    for tag in tags:
        assert tag in guide, f"cluster/README.md does not say how to build {tag}"
