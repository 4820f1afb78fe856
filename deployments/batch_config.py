"""The detector's batching settings, tunable on a running app.

They reach a replica as the Detector deployment's Serve `user_config`, which Serve
hands to `Detector.reconfigure` at start and again whenever a deploy changes only
it: a lightweight update, so the running replica keeps its loaded model, its queue
and its counters. (As constructor arguments they would change the deployment's code
version, and Serve would replace every replica.)

Defaults and bounds are written here once: `AppArgs` and the batch queue
(`deployments.fair_batch`) read them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MaxBatchSize = Annotated[int, Field(ge=1, le=256, description="most frames one forward pass takes")]
BatchWaitTimeout = Annotated[
    float,
    Field(ge=0.0, le=1.0, description="seconds a batch waits for more frames once its first one is queued"),
]


class BatchConfig(BaseModel):
    """One detector replica's batch queue settings. A key left out of a
    `user_config` takes its default here: the config given is the whole setting, as
    Serve replaces a deployment's `user_config` whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: MaxBatchSize = 8
    batch_wait_timeout_s: BatchWaitTimeout = 0.005

    @classmethod
    def from_user_config(cls, user_config: Any) -> "BatchConfig":
        """Validate a deployment's `user_config`; a bad one raises `ValueError` naming
        every offending key, so `serve status` shows what to fix."""
        try:
            return cls.model_validate(user_config)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'user_config'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"Detector user_config {user_config!r} rejected: {problems}") from None

    def user_config(self) -> dict[str, Any]:
        """The form Serve carries (JSON-serialisable)."""
        return self.model_dump()


DEFAULT_BATCH = BatchConfig()
