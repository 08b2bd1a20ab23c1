"""The Apptainer images of ``containers/`` and the bubblewrap runner that stands in for Apptainer.

Two images: a tiny recipe (seconds to build once the debootstrap base is cached) for the
runner's options, and ``containers/sim.def`` (the real one) for what orch needs inside it.
Run with ``-s`` to see the build times.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import psutil
import pytest
from support.images import REPO, SIM_RECIPE, BuildResult, apptainer, build_sandbox, runtime_env

import orchestrator

pytest_plugins = ["support.images"]  # fixtures: apptainer_path, sim_image_build, sim_image

PINS = REPO / "containers" / "pins.txt"
ML_RECIPE = REPO / "containers" / "ml.def"
container = pytest.mark.container
slow_build = pytest.mark.timeout(3600)  # a cold sim.def build takes minutes

TINY_RECIPE = """\
Bootstrap: docker
From: debian:bookworm-slim

%arguments
    greeting=hello

%files
    payload /opt/payload

%post
    echo "{{ greeting }}" > /opt/greeting
    echo "org.test.post from post" >> "$APPTAINER_LABELS"
    test "$SINGULARITY_LABELS" = "$APPTAINER_LABELS"

%environment
    export FROM_IMAGE=image
    export OVERRIDE_ME=image

%runscript
    echo "runscript args: $*"

%labels
    org.test.label hello world

%test
    test -f /opt/payload/data.txt
    test "$(cat /opt/greeting)" = "{{ greeting }}"

%help
    A tiny image for the runner's tests.
"""


def parse_pins(text: str) -> dict[str, tuple[str, str]]:
    """``pins.txt`` as {normalized name: (line, version)}."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[A-Za-z0-9_,.-]+\])?==([A-Za-z0-9._+-]+)", line)
        assert match, f"pins.txt: not an exact name==version pin: {line!r}"
        pins[normalize(match.group(1))] = (line, match.group(3))
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- pins (fast, no container) ---------------------------------------------------------------


def test_pins_match_orch_environment_and_pyproject():
    pins = parse_pins(PINS.read_text())
    assert {"globus-compute-endpoint", "globus-compute-sdk", "parsl", "dill"} <= set(pins)
    for name, (line, version) in pins.items():
        installed = importlib.metadata.version(name)
        assert installed == version, f"pins.txt has {line}, orch's environment has {installed}"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {}
    for dep in deps:
        match = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*(.*)", dep)
        assert match
        by_name[normalize(match.group(1))] = match.group(3).strip()
    for name in ("globus-compute-endpoint", "globus-compute-sdk", "parsl", "dill"):
        assert by_name.get(name) == f"=={pins[name][1]}", (
            f"pyproject.toml pins {name} as {by_name.get(name)!r}, pins.txt as =={pins[name][1]}"
        )


def test_ml_def_torch_pin_matches_setup():
    pins = re.findall(r"torch==([0-9][A-Za-z0-9.+]*)", ML_RECIPE.read_text())
    assert pins and set(pins) == {"2.13.0"}, pins
    setup = (REPO / "scripts" / "setup").read_text()
    assert "torch==2.13.0" in setup
    assert importlib.metadata.version("torch").split("+")[0] == "2.13.0"


def test_recipes_parse_with_the_runner():
    sys.path.insert(0, str(REPO / "tests" / "support"))
    try:
        import apptainer_bwrap as runner
    finally:
        sys.path.pop(0)
    for recipe_path, image in ((SIM_RECIPE, "sim"), (ML_RECIPE, "ml")):
        recipe = runner.Recipe(recipe_path.read_text(), {}, str(recipe_path))
        assert recipe.header["bootstrap"] == "docker"
        assert recipe.header["from"] == "debian:bookworm-slim"
        assert recipe.files() == [
            ("containers/pins.txt", "/opt/orch/pins.txt"),
            ("orchestrator", "/opt/orch/orchestrator"),
        ]
        for section in ("post", "environment", "runscript", "test", "labels", "help"):
            assert section in recipe.sections, (recipe_path, section)
        assert 'exec "$@"' in recipe.sections["runscript"]
        assert f"echo {image} > /opt/orch/IMAGE" in recipe.sections["post"]
        assert "pip install" in recipe.sections["post"] and "pins.txt" in recipe.sections["post"]
        env = recipe.sections["environment"]
        assert "/opt/venv/bin:$PATH" in env and "PYTHONNOUSERSITE=1" in env
        runner.recipe_key(recipe)  # its %files sources exist (from the repository root)


# --- the runner, on a tiny image ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, apptainer_path) -> Path:
    """A private image cache sharing the machine's debootstrap base, apt and pip caches."""
    shared = Path(os.environ.get("ORCH_IMAGE_CACHE") or Path.home() / ".cache/orch/images")
    cache = tmp_path_factory.mktemp("image-cache")
    for sub in ("base", "apt", "pip"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        (cache / sub).symlink_to(shared / sub)
    return cache


def write_tiny_project(root: Path, marker: str) -> Path:
    """A recipe and its %files payload (with build litter that must not count or be copied)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.def").write_text(TINY_RECIPE)
    payload = root / "payload"
    (payload / "__pycache__").mkdir(parents=True, exist_ok=True)
    (payload / "data.txt").write_text(marker)
    (payload / "__pycache__" / "mod.cpython-311.pyc").write_bytes(os.urandom(16))
    (payload / "stray.pyc").write_bytes(os.urandom(16))
    return root / "tiny.def"


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory, tiny_cache) -> Path:
    project = tmp_path_factory.mktemp("tiny-project")
    recipe = write_tiny_project(project, f"payload {uuid.uuid4()}")
    dest = tmp_path_factory.mktemp("tiny-images") / "tiny"
    env = runtime_env(ORCH_IMAGE_CACHE=str(tiny_cache))
    result = build_sandbox(recipe, dest, env=env, cwd=project)
    print(
        f"\n[images] tiny recipe: {'cache hit' if result.cached else 'built'} in "
        f"{result.seconds:.1f} s"
    )
    return dest


def run_in(image: Path, *command: str, options=(), env=None, cwd=None, action="exec"):
    return apptainer(action, *options, str(image), *command, env=env, cwd=cwd)


@container
def test_version(apptainer_path):
    for name in ("apptainer", "singularity"):
        out = subprocess.run([name, "--version"], capture_output=True, text=True, check=True)
        assert re.fullmatch(rf"{name} version \d+\.\d+\.\d+\S* .*\n", out.stdout), out.stdout


@container
def test_works_with_a_reduced_path(tiny_image, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run(
        [
            str(REPO / "tests/support/bin/singularity"),
            "exec",
            str(tiny_image),
            "sh",
            "-c",
            "echo $SINGULARITY_NAME $APPTAINER_NAME",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["tiny", "tiny"]


@container
def test_environment_host_cleanenv_env_and_image(tiny_image, tmp_path):
    show = (
        "echo host=${ORCH_T_HOST:-unset} new=${NEW:-unset} over=$OVERRIDE_ME img=$FROM_IMAGE "
        "path=$PATH container=$APPTAINER_CONTAINER name=$APPTAINER_NAME"
    )
    env = runtime_env(ORCH_T_HOST="yes", APPTAINERENV_FROM_PREFIX="prefixed", OVERRIDE_ME="host")
    # without --cleanenv the host's variables pass (not PATH); %environment wins over them
    out = run_in(tiny_image, "sh", "-c", show, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "host=yes " in out.stdout and "over=image " in out.stdout and "img=image " in out.stdout
    assert f"container={tiny_image} name=tiny" in out.stdout
    path = out.stdout.split("path=")[1].split()[0]
    assert str(REPO / "tests/support/bin") not in path
    # --cleanenv drops them; --env and APPTAINERENV_ pass and win over %environment
    out = run_in(
        tiny_image,
        "sh",
        "-c",
        show + " pre=$FROM_PREFIX",
        options=["--cleanenv", "--env", "NEW=1", "--env", "OVERRIDE_ME=cli"],
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "host=unset new=1 over=cli img=image " in out.stdout
    assert "pre=prefixed" in out.stdout
    # --env-file, and Apptainer's map syntax for several pairs in one --env
    env_file = tmp_path / "vars.env"
    env_file.write_text("# comment\nexport FILE_VAR='a b'\nOVERRIDE_ME=file\n")
    out = run_in(
        tiny_image,
        "sh",
        "-c",
        'echo "$FILE_VAR|$OVERRIDE_ME|$A|$B"',
        options=["-e", "--env-file", str(env_file), "--env", "A=1,B=2"],
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "a b|file|1|2", out.stderr


@container
def test_binds_ro_rw_and_default_binds(tiny_image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from host")
    opts = ["--cleanenv", "--bind", f"{data}:/data:ro", "-B", f"{data}:/opt/rw,{data}:/mnt/x"]
    script = (
        "cat /data/in.txt; echo; touch /data/no 2>/dev/null && echo ro-broken; "
        "echo written > /opt/rw/out.txt; ls /opt/payload >/dev/null; cat /mnt/x/in.txt; "
        "echo; touch /opt/nope 2>/dev/null && echo image-writable; pwd; "
        'test -d "$HOME" && echo home-ok; test -w /tmp && echo tmp-ok'
    )
    out = run_in(tiny_image, "sh", "-c", script, options=opts, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "from host" and lines[1] == "from host"
    assert "ro-broken" not in out.stdout and "image-writable" not in out.stdout
    assert str(tmp_path) in lines and "home-ok" in lines and "tmp-ok" in lines
    assert (data / "out.txt").read_text() == "written\n"
    # mount points were made in memory: the image itself is unchanged
    assert not (tiny_image / "opt" / "rw").exists() and not (tiny_image / "data").exists()
    assert not (tiny_image / "mnt" / "x").exists() and not (tiny_image / "opt" / "nope").exists()
    # a missing source fails as in Apptainer
    out = run_in(tiny_image, "true", options=["--bind", f"{tmp_path}/missing:/x"], cwd=tmp_path)
    assert out.returncode == 255 and "doesn't exist" in out.stderr


@container
def test_spaces_in_bind_and_pwd(tiny_image, tmp_path):
    spaced = tmp_path / "run dir with spaces"
    spaced.mkdir()
    (spaced / "a file.txt").write_text("ok")
    opts = [
        "--cleanenv",
        "--nv",  # accepted, a no-op here
        "--rocm",
        "--bind",
        str(spaced),
        "--bind",
        f"{spaced}:/in side",
        "--pwd",
        str(spaced),
    ]
    out = run_in(
        tiny_image,
        "sh",
        "-c",
        'pwd; cat "a file.txt"; echo; cat "/in side/a file.txt"',
        options=opts,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(spaced), "ok", "ok"]
    out = run_in(tiny_image, "true", options=["--pwd", "/no/such dir"], cwd=tmp_path)
    assert out.returncode == 255 and "working directory" in out.stderr


@container
def test_host_files_invisible(tiny_image, tmp_path):
    host_only = Path("/var/tmp") / f"orch-host-only-{uuid.uuid4().hex}"
    host_only.write_text("host")
    try:
        probe = (
            f"test -e {host_only} && echo visible-host-file; test -e /usr/bin/xtb && echo xtb; "
            "test -e /work && echo work; test -d /opt/payload && echo payload"
        )
        out = run_in(tiny_image, "sh", "-c", probe, options=["--cleanenv"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["payload"], out.stdout
    finally:
        host_only.unlink()


@container
def test_containall_and_no_home(tiny_image, tmp_path):
    (tmp_path / "here.txt").write_text("x")
    out = run_in(
        tiny_image,
        "sh",
        "-c",
        'ls "$HOME" | wc -l; test -e here.txt && echo cwd; '
        "ls /tmp | wc -l; echo ${ORCH_T_HOST:-unset}",
        options=["--containall"],
        env=runtime_env(ORCH_T_HOST="yes"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0", "unset"], out.stdout
    out = run_in(tiny_image, "sh", "-c", "pwd", options=["--no-home"], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path), out.stderr


@container
def test_exit_status_and_missing_command(tiny_image, tmp_path):
    assert run_in(tiny_image, "sh", "-c", "exit 7", cwd=tmp_path).returncode == 7
    out = run_in(tiny_image, "no-such-program", cwd=tmp_path)
    assert out.returncode == 255 and "executable file not found" in out.stderr


@container
def test_run_uses_runscript_and_inspect(tiny_image, tmp_path):
    out = run_in(tiny_image, "a", "b c", action="run", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "runscript args: a b c\n", out.stderr
    labels = json.loads(apptainer("inspect", "--labels", "--json", str(tiny_image)).stdout)
    labels = labels["data"]["attributes"]["labels"]
    assert labels["org.test.label"] == "hello world"
    assert labels["org.test.post"] == "from post"
    text = apptainer("inspect", "--labels", str(tiny_image)).stdout
    assert "org.test.label: hello world" in text.splitlines()
    assert "tiny image" in apptainer("inspect", "--helpfile", str(tiny_image)).stdout
    assert (tiny_image / "opt/greeting").read_text() == "hello\n"  # %arguments default


@container
def test_unsupported_options_and_commands_fail_loudly(tiny_image, tmp_path):
    for args in (
        ["exec", "--writable", str(tiny_image), "true"],
        ["exec", "-Z", str(tiny_image), "true"],
        ["exec", "--bind", f"{tmp_path}:/x:nosuid", str(tiny_image), "true"],
        ["shell", str(tiny_image)],
        ["pull", "x.sif", "oras://example.org/x:1"],
        ["build", "--sandbox", "--section", "post", str(tmp_path / "o"), "x.def"],
    ):
        out = apptainer(*args, cwd=tmp_path)
        assert out.returncode == 255, (args, out)
        assert out.stderr.startswith("FATAL:"), (args, out.stderr)


@container
def test_sif_images_and_sif_builds_are_refused(apptainer_path, tmp_path):
    sif = tmp_path / "image.sif"
    sif.write_bytes(b"SIF_MAGIC")
    out = apptainer("exec", str(sif), "true", cwd=tmp_path)
    assert out.returncode == 255 and "sandbox" in out.stderr
    out = apptainer("exec", "oras://ghcr.io/org/img:1", "true", cwd=tmp_path)
    assert out.returncode == 255 and "sandbox" in out.stderr
    out = apptainer("build", str(tmp_path / "x.sif"), str(SIM_RECIPE), cwd=REPO)
    assert out.returncode == 255 and "sandbox" in out.stderr


@container
def test_signals_end_the_command_and_nothing_is_left(tiny_image, tmp_path):
    """SIGTERM/SIGINT to the process group (orch's os.killpg) or to the runner's PID (bwrap's).

    The command receives a group signal itself, but bwrap ends on it too and then kills the
    command (--die-with-parent): a handler in the command may not get to finish, and the exit
    status is bwrap's (killed by the signal), not the command's.
    """
    loop = "trap 'echo got-term; exit 42' TERM INT; echo ready; while :; do sleep 0.1; done"
    for how, sig in (("group", signal.SIGTERM), ("pid", signal.SIGTERM), ("group", signal.SIGINT)):
        proc = subprocess.Popen(
            ["apptainer", "exec", "--cleanenv", str(tiny_image), "sh", "-c", loop],
            env=runtime_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            assert psutil.Process(proc.pid).name() == "bwrap"  # the runner exec'd bwrap
            if how == "group":
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
            proc.stdout.read()
            assert proc.wait(timeout=10) == -sig
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        deadline = time.monotonic() + 5
        while True:
            alive = [
                p
                for p in psutil.process_iter(["cmdline", "status"])
                if loop in " ".join(p.info["cmdline"] or ())
                and p.info["status"] != psutil.STATUS_ZOMBIE
            ]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not alive, f"left after {sig!r} to the {how}: {alive}"


# --- builds: cache, %files, %test --------------------------------------------------------------


@container
def test_build_cache_hit_miss_and_files_content(tiny_cache, tmp_path):
    project = tmp_path / "project"
    recipe = write_tiny_project(project, f"first {uuid.uuid4()}")
    env = runtime_env(ORCH_IMAGE_CACHE=str(tiny_cache))
    first = build_sandbox(recipe, tmp_path / "one", env=env, cwd=project)
    assert not first.cached and "post: running %post" in first.log and "test: passed" in first.log
    # build litter in %files neither changes the key nor lands in the image
    (project / "payload" / "__pycache__" / "other.pyc").write_bytes(b"junk")
    second = build_sandbox(recipe, tmp_path / "two", env=env, cwd=project)
    assert second.cached and "%post" not in second.log
    assert not (tmp_path / "two/opt/payload/__pycache__").exists()
    assert not (tmp_path / "two/opt/payload/stray.pyc").exists()
    # a real directory, hard-linked to the cache entry
    assert (tmp_path / "two").is_dir() and not (tmp_path / "two").is_symlink()
    one, two = (
        (tmp_path / "one/opt/payload/data.txt").stat(),
        (tmp_path / "two/opt/payload/data.txt").stat(),
    )
    assert one.st_ino == two.st_ino
    # DEST exists: an error without --force, replaced with it
    out = apptainer("build", "--sandbox", str(tmp_path / "two"), str(recipe), env=env, cwd=project)
    assert out.returncode == 255 and "already exists" in out.stderr
    forced = build_sandbox(recipe, tmp_path / "two", options=["--force"], env=env, cwd=project)
    assert forced.cached
    # new %files content or a build argument: a new key, a real build
    (project / "payload" / "data.txt").write_text(f"second {uuid.uuid4()}")
    third = build_sandbox(
        recipe, tmp_path / "three", options=["--build-arg", "greeting=hi"], env=env, cwd=project
    )
    assert not third.cached
    assert (tmp_path / "three/opt/greeting").read_text() == "hi\n"
    assert (tmp_path / "one/opt/greeting").read_text() == "hello\n"
    # old entries of a recipe are pruned (ORCH_IMAGE_CACHE_KEEP, default 2); copies stay whole
    names = [
        json.loads((e / "meta.json").read_text())["name"] for e in tiny_cache.glob("entries/*")
    ]
    assert names.count("tiny.def") <= 2, names
    assert (tmp_path / "one/opt/payload/data.txt").exists()
    print(
        f"\n[images] tiny recipe: cold (cached base) {first.seconds:.1f} s, "
        f"cache hit {second.seconds:.1f} s, after a %files change {third.seconds:.1f} s"
    )


@container
def test_failing_test_section_fails_the_build(tiny_cache, tmp_path):
    project = tmp_path / "project"
    write_tiny_project(project, "x")
    recipe = project / "fail.def"
    recipe.write_text(TINY_RECIPE.replace("test -f /opt/payload/data.txt", "exit 3"))
    env = runtime_env(ORCH_IMAGE_CACHE=str(tiny_cache))
    out = apptainer(
        "build", "--sandbox", str(tmp_path / "img"), str(recipe), env=env, cwd=project, timeout=600
    )
    assert out.returncode == 255 and "%test failed" in out.stderr
    assert not (tmp_path / "img").exists()
    # --notest builds it (and caches it as untested)
    ok = build_sandbox(recipe, tmp_path / "img", options=["--notest"], env=env, cwd=project)
    assert (ok.image / ".singularity.d/test").exists()


# --- the real sim image ----------------------------------------------------------------------


@container
@slow_build
def test_sim_image_builds_passes_its_test_and_caches(
    sim_image_build: BuildResult, sim_sources: Path, tmp_path
):
    first = sim_image_build
    if not first.cached:
        assert "test: passed" in first.log, first.log[-3000:]
        for code in ("xtb", "lammps", "cp2k", "nwchem"):
            assert f"%test: {code}" in first.log
    again = build_sandbox(
        sim_sources / "containers/sim.def", tmp_path / "sim-again", cwd=sim_sources
    )
    assert again.cached, again.log
    print(
        f"\n[images] containers/sim.def: first build this session {first.seconds:.1f} s "
        f"({'cache hit' if first.cached else 'cold or partly cached'}), "
        f"second build {again.seconds:.1f} s (cache hit)"
    )
    meta = json.loads(
        (
            Path(os.environ.get("ORCH_IMAGE_CACHE") or Path.home() / ".cache/orch/images")
            / "entries"
            / _key_of(again.log)
            / "meta.json"
        ).read_text()
    )
    assert meta["tested"] is True
    print(f"[images] containers/sim.def: the cached entry took {meta['seconds']} s to build")


def _key_of(log: str) -> str:
    found = re.search(r"cache key ([0-9a-f]{16})", log)
    assert found, log
    short = found.group(1)
    root = Path(os.environ.get("ORCH_IMAGE_CACHE") or Path.home() / ".cache/orch/images")
    (match,) = [p.name for p in (root / "entries").iterdir() if p.name.startswith(short)]
    return match


@container
@slow_build
def test_sim_image_labels(sim_image):
    out = apptainer("inspect", "--labels", "--json", str(sim_image), check=True)
    labels = json.loads(out.stdout)["data"]["attributes"]["labels"]
    assert labels["org.orch.version"] == orchestrator.__version__
    assert labels["org.orch.image"] == "sim"
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.sub(r"\[.*\]", "", line).split("==")
            assert labels.get(f"org.orch.pin.{name}") == version, (line, labels)


@container
@slow_build
def test_sim_image_contents(sim_image, tmp_path):
    assert (sim_image / "opt/orch/IMAGE").read_text().strip() == "sim"
    out = run_in(sim_image, "cat", "/opt/orch/IMAGE", options=["--cleanenv"], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "sim", out.stderr
    assert not Path("/opt/orch/IMAGE").exists()  # only inside
    out = run_in(sim_image, "xtb", "--version", options=["--cleanenv"], cwd=tmp_path)
    assert out.returncode == 0 and "xtb version" in out.stdout, out.stdout + out.stderr
    script = (
        "import sys, orchestrator, orchestrator.apps.sim, parsl, dill, globus_compute_endpoint;"
        "print(orchestrator.__file__, sys.version_info[:2], parsl.__version__, dill.__version__)"
    )
    out = run_in(sim_image, "python", "-c", script, options=["--cleanenv"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path, rest = out.stdout.split(" ", 1)
    assert path == "/opt/orch/orchestrator/__init__.py"
    assert f"({sys.version_info.major}, {sys.version_info.minor})" in rest
    assert (
        importlib.metadata.version("parsl") in rest and importlib.metadata.version("dill") in rest
    )
    # the same command orch emits: --cleanenv, --env PYTHONNOUSERSITE=1, --bind run, --pwd run
    run = tmp_path / "run dir"
    run.mkdir()
    out = run_in(
        sim_image,
        "sh",
        "-c",
        'echo "$PYTHONNOUSERSITE $(pwd) $(command -v python)"',
        options=[
            "--cleanenv",
            "--env",
            "PYTHONNOUSERSITE=1",
            "--bind",
            str(run),
            "--pwd",
            str(run),
        ],
        cwd=tmp_path,
    )
    assert out.stdout.strip() == f"1 {run} /opt/venv/bin/python", out.stderr


@container
@slow_build
def test_sim_image_has_mpi_and_codes(sim_image, tmp_path):
    probe = (
        "command -v lmp && command -v nwchem && (command -v cp2k.psmp || command -v cp2k) "
        "&& command -v mpiexec"
    )
    out = run_in(sim_image, "sh", "-c", probe, options=["--cleanenv"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(out.stdout.split()) == 4
