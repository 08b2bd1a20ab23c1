"""Container command lines and site settings: the exact argument lists orch gives Apptainer.

No image and no runtime needed: these check the boundary (what orch would run), for
apptainer and singularity, both modes, GPU and CPU sites, binds, environment and paths with
spaces. The image tests proper are in test_container_campaign.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from orchestrator.apps.containers import container_argv, split_launcher
from orchestrator.apps.images import fingerprint, image_digest
from orchestrator.config.containers import Bind
from orchestrator.config.sites import SiteConfig
from orchestrator.containers import commands
from orchestrator.containers.plan import plan_for
from orchestrator.exceptions import ConfigError

pytestmark = pytest.mark.container


def site(tmp_path: Path, **container: Any) -> SiteConfig:
    kind = container.pop("kind", "cpu")
    settings: dict[str, Any] = {"image": str(tmp_path / "sim.sif"), **container}
    (tmp_path / "sim.sif").touch()
    extra: dict[str, Any] = {"accelerators": ["0"]} if kind == "gpu" else {}
    return SiteConfig.model_validate(
        {
            "name": "s",
            "kind": kind,
            "backend": "local",
            "capacity": 1,
            "container": settings,
            **extra,
        }
    )


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_exec_mode_argv_for_a_cpu_site(tmp_path: Path, runtime: str) -> None:
    config = site(
        tmp_path, mode="exec", runtime=runtime, binds=["/scratch/data:/data:ro"], env={"A": 1}
    )
    run_dir, work = tmp_path / "run", tmp_path / "run" / "sites" / "s"
    plan = plan_for(config, run_dir, work)
    assert plan is not None
    spec = plan.exec_spec()
    image = str(tmp_path / "sim.sif")
    assert spec["argv"] == [
        runtime, "exec", "--cleanenv",
        "--bind", str(run_dir),  # the working dir is inside the run dir: one bind covers both
        "--bind", "/scratch/data:/data:ro",
        "--env", "PYTHONNOUSERSITE=1", "--env", "A=1",
    ]  # fmt: skip
    argv = container_argv(
        spec, ["xtb", "mol.xyz", "--sp"], "xtb", env={"OMP_NUM_THREADS": "1"}, workdir=work / "x"
    )
    assert argv == [
        *spec["argv"],
        "--bind", str(work / "x"), "--pwd", str(work / "x"),
        "--env", "OMP_NUM_THREADS=1",
        image, "xtb", "mol.xyz", "--sp",
    ]  # fmt: skip


def test_exec_mode_gpu_site_gets_nv_and_the_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = site(tmp_path, mode="exec", kind="gpu")
    plan = plan_for(config, tmp_path / "run", tmp_path / "run" / "w")
    assert plan is not None
    spec = plan.exec_spec()
    assert spec["argv"][:4] == ["apptainer", "exec", "--cleanenv", "--nv"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    argv = container_argv(spec, ["python3", "t.py"], "python3", env={}, workdir=tmp_path)
    assert argv[argv.index(spec["image"]) - 2 :][:2] == ["--env", "CUDA_VISIBLE_DEVICES=3"]


def test_gpu_can_be_switched_off_and_on(tmp_path: Path) -> None:
    off = plan_for(site(tmp_path, mode="exec", kind="gpu", gpu=False), tmp_path, tmp_path)
    on = plan_for(site(tmp_path, mode="exec", gpu=True), tmp_path, tmp_path)
    assert off is not None and on is not None
    assert "--nv" not in off.exec_spec()["argv"]
    assert "--nv" in on.exec_spec()["argv"]


def test_the_launcher_stays_outside_the_image(tmp_path: Path) -> None:
    spec = {"argv": ["apptainer", "exec", "--cleanenv"], "image": "/img/sim.sif"}
    argv = container_argv(
        spec,
        ["mpiexec", "-n", "4", "--bind-to", "core", "/opt/lammps/bin/lmp_mpi", "-in", "in.lmp"],
        "lmp",
        env={},
        workdir=Path("/w"),
    )
    assert argv == [
        "mpiexec", "-n", "4", "--bind-to", "core",
        "apptainer", "exec", "--cleanenv", "--bind", "/w", "--pwd", "/w",
        "/img/sim.sif", "/opt/lammps/bin/lmp_mpi", "-in", "in.lmp",
    ]  # fmt: skip
    assert split_launcher(["srun", "-n", "2", "cp2k.psmp", "-i", "x"], "cp2k.psmp") == (
        ["srun", "-n", "2"],
        ["cp2k.psmp", "-i", "x"],
    )
    assert split_launcher(["xtb", "--sp"], "xtb") == ([], ["xtb", "--sp"])
    # a command without the code's program is run whole inside the image
    assert split_launcher(["my-wrapper", "--fast"], "xtb") == ([], ["my-wrapper", "--fast"])


def test_exec_mode_keeps_paths_with_spaces_as_single_arguments(tmp_path: Path) -> None:
    spaced = tmp_path / "my images"
    spaced.mkdir()
    (spaced / "sim.sif").touch()
    config = SiteConfig.model_validate(
        {
            "name": "s",
            "kind": "cpu",
            "backend": "local",
            "capacity": 1,
            "container": {
                "image": str(spaced / "sim.sif"),
                "mode": "exec",
                "binds": [f"{spaced}:/in put"],
            },
        }
    )
    run = tmp_path / "run dir"
    plan = plan_for(config, run, run / "w")
    assert plan is not None
    spec = plan.exec_spec()
    argv = container_argv(spec, ["xtb"], "xtb", env={}, workdir=run / "w" / "x 1")
    assert str(run) in argv and f"{spaced}:/in put" in argv
    assert str(spaced / "sim.sif") in argv and str(run / "w" / "x 1") in argv


def test_workers_mode_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_SIM_ROOT")
    config = site(tmp_path, binds=["/scratch"], env={"OMP_PROC_BIND": "close"})
    run_dir = tmp_path / "run"
    plan = plan_for(config, run_dir, run_dir / "sites" / "s", ["/campaigns/mine"])
    assert plan is not None
    template = plan.launch_template(run_dir / "sites" / "s")
    words = shlex.split(template)
    assert words == [
        "apptainer", "exec", "--cleanenv",
        "--bind", str(run_dir), "--bind", "/campaigns/mine", "--bind", "/scratch",
        "--env", "PYTHONNOUSERSITE=1", "--env", "OMP_PROC_BIND=close",
        "--env", "PYTHONPATH=/campaigns/mine",
        "--pwd", str(run_dir / "sites" / "s"),
        str(tmp_path / "sim.sif"), commands.LAUNCH_PLACEHOLDER,
    ]  # fmt: skip


def test_workers_mode_refuses_whitespace_it_cannot_carry(tmp_path: Path) -> None:
    spec = commands.workers_launch_template
    config = site(tmp_path)
    assert config.container is not None
    with pytest.raises(ValueError, match="whitespace"):
        spec(config.container, "cpu", [Bind(src="/a b", dst="/a b")], "/img")


def test_build_and_pull_argv() -> None:
    assert commands.build_argv("apptainer", "/i/sim.sif", "containers/sim.def") == [
        "apptainer", "build", "--fakeroot", "/i/sim.sif", "containers/sim.def",
    ]  # fmt: skip
    assert commands.build_argv("singularity", "/i/sim", "containers/sim.def") == [
        "singularity", "build", "--fakeroot", "--sandbox", "/i/sim", "containers/sim.def",
    ]  # fmt: skip
    assert commands.pull_argv("apptainer", "/i/x.sif", "oras://r/x:1") == [
        "apptainer", "pull", "/i/x.sif", "oras://r/x:1",
    ]  # fmt: skip


def test_site_yaml_errors_are_one_line(tmp_path: Path) -> None:
    from orchestrator.config.sites import load_site_file

    cases = {
        "mode: pods": "container.mode: 'pods' is not allowed; use one of: workers",
        "runtime: docker": "container.runtime: 'docker' is not allowed; use one of: apptainer",
        "recipe: nope.def": "container.recipe: 'nope.def' is not a definition file",
        "binds: [data]": "container.binds: 'data' is not an absolute path",
        "env: [A]": "container.env: must be a mapping",
        "imgae: x": "container.imgae: unknown field; did you mean 'image'?",
    }
    for line, message in cases.items():
        path = tmp_path / "s.yaml"
        image = tmp_path / "sim.sif"
        image.touch()
        path.write_text(
            f"kind: cpu\nbackend: local\ncapacity: 1\ncontainer:\n  image: {image}\n  {line}\n"
        )
        with pytest.raises(ConfigError) as info:
            load_site_file(path)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert str(info.value).startswith(f"{path}: ")


def test_image_digest_of_a_file_and_of_a_tree(tmp_path: Path) -> None:
    sif = tmp_path / "a.sif"
    sif.write_bytes(b"x" * 1000)
    import hashlib

    assert image_digest(sif) == "sha256:" + hashlib.sha256(b"x" * 1000).hexdigest()
    tree = tmp_path / "root"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("one")
    (tree / "lib").symlink_to("bin")
    first, print1 = image_digest(tree), fingerprint(tree)
    assert image_digest(tree) == first and fingerprint(tree) == print1
    (tree / "bin" / "tool").write_text("two")
    assert image_digest(tree) != first and fingerprint(tree) != print1
    (tree / "bin" / "tool").write_text("one")
    assert image_digest(tree) == first  # content, not time, makes the digest
    (tree / "bin" / "tool").chmod(0o755)
    assert image_digest(tree) != first


def test_model_versions_are_tagged_with_the_training_image() -> None:
    from orchestrator.models import Result, Timestamps
    from orchestrator.registry.tags import provenance_tags

    result = Result(
        task_id="t1", method="train", topic="train", site="polaris-gpu", image="/i/ml.sif",
        image_digest="sha256:" + "ab" * 32, timestamps=Timestamps(created=0.0),
    )  # fmt: skip
    assert provenance_tags(result) == {
        "orch.task_id": "t1", "orch.site": "polaris-gpu", "image": "/i/ml.sif",
        "image_digest": "sha256:" + "ab" * 32,
    }  # fmt: skip
    plain = result.model_copy(update={"image": None, "image_digest": None})
    assert "image_digest" not in provenance_tags(plain)
