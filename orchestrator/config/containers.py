"""The ``container:`` section of a site: the Apptainer image its tasks run in.

Two modes (see the README's "Containers and deployment" section):

* ``workers``: the site's whole worker pool runs inside the image, as a Globus Compute
  endpoint does with a container wrapper. Python tasks, training and inference run there.
* ``exec``: workers stay on the host and each simulation code is started as
  ``[launcher] apptainer exec ... IMAGE code ...``: the MPI launcher outside, the code inside.

Recipes are looked up in the repository's ``containers/`` folder (``ORCH_CONTAINERS_DIR``
overrides it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

ContainerMode = Literal["workers", "exec"]
ContainerRuntime = Literal["apptainer", "singularity"]

IMAGE_SCHEMES = ("oras://", "docker://")
"""Image URIs ``orch deploy`` pulls (``oras://`` gives a bit-exact copy on every site)."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CONTAINER_FIELD_HINTS: dict[str, str] = {
    "image": "give the image's absolute path on the site (a .sif file or a sandbox "
    "directory), or an oras:// or docker:// URI that `orch deploy` pulls",
    "recipe": "give the name of a definition file in containers/ (e.g. sim.def or ml.def)",
    "runtime": "use one of: apptainer, singularity",
    "mode": "use one of: workers (the worker pool runs in the image), exec (each simulation "
    "code is started with `apptainer exec`)",
    "binds": "give a list of absolute paths, each `src[:dst[:ro|rw]]`, e.g. /scratch/me",
    "env": "give a mapping of variable name: value, e.g. {OMP_PROC_BIND: close}",
    "gpu": "set true (pass --nv) or false; default true on kind: gpu sites",
    "path": "give the absolute path on the site where `orch deploy` keeps the pulled image",
}
"""One hint per field, for one-line configuration error messages."""


def containers_dir() -> Path:
    """The folder that holds the Apptainer definition files (``containers/``)."""
    override = os.environ.get("ORCH_CONTAINERS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent.parent / "containers"


def _rule(field: str, problem: str, hint: str) -> PydanticCustomError:
    """A rule error in the shape ``orchestrator.config.sites`` reports as one line."""
    return PydanticCustomError(
        "site_rule",
        "{field}: {problem}; {hint}",
        {"field": f"container.{field}", "problem": problem, "hint": hint},
    )


def is_uri(image: str) -> bool:
    """Whether ``image`` is a registry URI (pulled by ``orch deploy``) rather than a path."""
    return image.startswith(IMAGE_SCHEMES)


class Bind(BaseModel):
    """One bind mount, ``src[:dst[:ro|rw]]``."""

    model_config = ConfigDict(frozen=True)

    src: str
    dst: str
    mode: Literal["ro", "rw"] | None = None

    @classmethod
    def parse(cls, text: str) -> Bind:
        """Parse ``src[:dst[:ro|rw]]`` (the form ``--bind`` takes)."""
        parts = text.split(":")
        if len(parts) > 3:
            raise ValueError("has more than three ':'-separated parts")
        src = parts[0]
        dst = parts[1] if len(parts) > 1 and parts[1] else src
        mode = parts[2] if len(parts) > 2 else None
        if mode not in (None, "ro", "rw"):
            raise ValueError(f"mode {mode!r} is not ro or rw")
        for path in (src, dst):
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute path")
        return cls(src=src, dst=dst, mode=mode)  # type: ignore[arg-type]

    def spec(self) -> str:
        """The ``--bind`` argument."""
        text = self.src if self.dst == self.src and self.mode is None else f"{self.src}:{self.dst}"
        return f"{text}:{self.mode}" if self.mode else text


class ContainerConfig(BaseModel):
    """Where and how a site's tasks run in an Apptainer image.

    Attributes:
        image: The image on the site: an absolute path to a SIF file or a sandbox directory
            (``~`` is expanded on the machine that holds it), or an ``oras://`` /
            ``docker://`` URI that ``orch deploy`` pulls to ``path``.
        recipe: A definition file in ``containers/`` that ``orch deploy`` builds ``image``
            from when it is missing.
        runtime: ``apptainer`` (default) or ``singularity``: the program that runs the image.
        mode: ``workers`` (default: the worker pool runs inside the image) or ``exec`` (each
            simulation code is started with ``apptainer exec``, the launcher outside).
        binds: Extra bind mounts, ``src[:dst[:ro|rw]]`` with absolute paths. orch always
            binds the run directory, the site's working directory and the data store path.
        env: Variables set inside the container (``--cleanenv`` is always used, so only
            these and the ones orch passes reach the task).
        gpu: Pass ``--nv`` (NVIDIA GPUs); default true on ``kind: gpu`` sites.
        path: Where ``orch deploy`` keeps an image pulled from a URI (default
            ``~/.orch/images/<name>.sif`` on the site).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)
    recipe: str | None = None
    runtime: ContainerRuntime = "apptainer"
    mode: ContainerMode = "workers"
    binds: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    gpu: bool | None = None
    path: str | None = None

    @field_validator("image")
    @classmethod
    def _image_form(cls, value: str) -> str:
        if is_uri(value):
            return value
        if "://" in value:
            raise _rule(
                "image",
                f"{value!r} uses a scheme orch cannot pull",
                "use an oras:// or docker:// URI, or a path on the site",
            )
        if not value.startswith(("/", "~")):
            raise _rule(
                "image",
                f"{value!r} is not an absolute path",
                "give the image's absolute path on the site, e.g. /home/me/images/sim.sif",
            )
        return value  # `~` is expanded where the image lies (a remote site's home differs)

    @field_validator("recipe")
    @classmethod
    def _recipe_in_folder(cls, value: str | None) -> str | None:
        if value is None:
            return value
        folder = containers_dir()
        name = value.removeprefix("containers/")
        candidate = folder / name
        if "/" in name or not name.endswith(".def") or not candidate.is_file():
            have = sorted(p.name for p in folder.glob("*.def")) if folder.is_dir() else []
            raise _rule(
                "recipe",
                f"{value!r} is not a definition file in {folder}",
                f"use one of: {', '.join(have) or '(none found)'}",
            )
        return name

    @field_validator("binds", mode="before")
    @classmethod
    def _binds_form(cls, value: object) -> object:
        if not isinstance(value, list):
            return value
        for item in value:
            if not isinstance(item, str):
                raise _rule("binds", f"{item!r} is not text", CONTAINER_FIELD_HINTS["binds"])
            if "," in item:
                raise _rule(
                    "binds",
                    f"{item!r} contains ','",
                    "give one bind per list item (the runtime splits --bind on commas)",
                )
            try:
                Bind.parse(item)
            except ValueError as exc:
                text = str(exc) if repr(item) in str(exc) else f"{item!r} {exc}"
                raise _rule("binds", text, CONTAINER_FIELD_HINTS["binds"]) from None
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_form(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise _rule(
                    "env",
                    f"{key!r} is not a variable name",
                    "use letters, digits and '_' (not starting with a digit)",
                )
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise _rule(
                    "env", f"{key}: {item!r} is not a text or number value", "quote the value"
                )
            out[key] = str(item)
        return out

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("/", "~")):
            raise _rule("path", f"{value!r} is not an absolute path", CONTAINER_FIELD_HINTS["path"])
        return value

    @model_validator(mode="after")
    def _path_only_for_uris(self) -> ContainerConfig:
        if self.path is not None and not is_uri(self.image):
            raise _rule(
                "path",
                "only used when image is an oras:// or docker:// URI",
                "remove it (the image is already a path)",
            )
        if self.recipe is not None and is_uri(self.image):
            raise _rule(
                "recipe",
                "cannot build an image given as a URI",
                "remove recipe, or set image to the path the built image should have",
            )
        return self

    def bind_list(self) -> list[Bind]:
        """``binds`` parsed."""
        return [Bind.parse(b) for b in self.binds]

    def image_path(self, site_name: str) -> str:
        """The image's path on the site (a URI's pull target for URIs)."""
        if not is_uri(self.image):
            return self.image
        return self.path or os.path.join("~", ".orch", "images", f"{site_name}.sif")

    def uses_gpu(self, kind: str) -> bool:
        """Whether ``--nv`` is passed (``gpu``, else true for ``kind: gpu``)."""
        return self.gpu if self.gpu is not None else kind == "gpu"
