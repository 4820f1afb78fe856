"""What the ingress deployment is given: one typed, frozen value.

`serve_app` builds it from `AppArgs` (`AppArgs.ingress_settings()`) and binds it to
the `Ingress`; the ingress and its page read it and import nothing from `serve_app`.
That keeps the layers one way: `serve_app` (the top: arguments -> application)
imports `deployments`, never the reverse.

No field has a default: every value was chosen once, in `AppArgs` or in
`StreamPolicy`, and is only carried here.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from component.ice import IceConfig
from component.policy import StreamPolicy
from component.session import Render
from deployments.models.spec import ModelSpec


class IngressSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    # --- the page (deployments/page.py) ---------------------------------------------
    title: str
    default_threshold: float = Field(ge=0.0, le=1.0)
    render: Render
    # --- the stream: every session's limits, and both ends' ICE -------------------------
    policy: StreamPolicy
    ice: IceConfig
    # --- the detector call ------------------------------------------------------------
    # Frames are scaled to this model's input on the ingress's media threads.
    model: ModelSpec
    detector_timeout_s: float = Field(gt=0)
    # Frames of several sessions per detector call (deployments/frame_packer.py).
    pack_wait_s: float = Field(ge=0)
    pack_max_frames: int = Field(ge=1)
    # --- access -----------------------------------------------------------------------
    # Set: the page asks for it as password and /webrtc/* need `Authorization: Bearer`.
    auth_token: Optional[SecretStr]
    # Bearer token for GET /webrtc/sessions; None: that route is off.
    admin_token: Optional[SecretStr]

    def secret(self, name: str) -> Optional[str]:
        """A token's plain value (None when unset), for the routes that compare it."""
        value: Optional[SecretStr] = getattr(self, name)
        return value.get_secret_value() if value is not None else None
