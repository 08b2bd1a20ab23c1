"""Tags every logged model version carries (no MLflow import here)."""

from __future__ import annotations

from typing import Any


def provenance_tags(result: Any) -> dict[str, str]:
    """Tags that say where a training result was made: task, site and image digest.

    Args:
        result: The training task's ``orchestrator.models.Result``.

    Returns:
        ``orch.task_id``, ``orch.site`` and, when the task ran in a container image,
        ``image`` and ``image_digest`` (only the fields that are set).
    """
    tags = {
        "orch.task_id": getattr(result, "task_id", None),
        "orch.site": getattr(result, "site", None),
        "image": getattr(result, "image", None),
        "image_digest": getattr(result, "image_digest", None),
    }
    return {key: str(value) for key, value in tags.items() if value}
