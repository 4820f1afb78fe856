"""The one typed configuration of the Serve app.

`serve run serve_app:app key=value ...`, a Serve config YAML's `args:` block and the
tests all build this same object, so a typo or an out-of-range value fails at start-up
with the argument's name, never later inside a replica.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Optional

from pydantic import (
    BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator,
)

from component.encoding import VideoEncoding
from component.ice import IceConfig, IceServer
from component.policy import StreamPolicy
from component.turn import TurnRest
from deployments.autoscaling import POLICY as AUTOSCALING_POLICY
from deployments.batch_config import DEFAULT_BATCH, BatchConfig, BatchWaitTimeout, MaxBatchSize
from deployments.ingress_settings import IngressSettings
from deployments.models.spec import ModelSpec
from deployments.priority import inference_threads


def _split_csv(value: Any) -> Any:
    """CLI values arrive as strings: accept `a,b` and JSON lists for list fields."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _ice_problem(error: Any) -> str:
    """One `IceConfig` validation error, named as the `ice_*` argument it came from."""
    loc = error["loc"]
    name = f"ice_{loc[0]}" if loc else "ice_port_min / ice_port_max"
    return f"{name}: " + re.sub(r"\b(port_min|port_max)\b", r"ice_\1", error["msg"])


class AppArgs(BaseModel):
    # hide_input_in_errors: a failed validation must not echo the secrets it was given.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), hide_input_in_errors=True)

    # --- the page -------------------------------------------------------------
    title: str = "Live object detection (WebRTC + Ray Serve)"
    default_threshold: float = Field(0.3, ge=0.0, le=1.0)
    render: Literal["server", "browser"] = Field(
        "server",
        description="server: annotated video comes back; browser: only detections come back "
        "(data channel) and the page draws them over its own camera, no video is encoded",
    )

    # --- sessions -----------------------------------------------------------------
    # These become the stream's `StreamPolicy` (`stream_policy()`). Where the component's
    # default fits a public service too, it is taken from there; time_limit, max_sessions
    # and offer_rate_per_s differ on purpose: the component keeps the reference's
    # "unlimited", a served app must not.
    time_limit: Optional[float] = Field(
        60.0, gt=0, description="seconds a session may stream after it connects; null for none"
    )
    stream_every: float = Field(
        StreamPolicy.default_of("stream_every"), ge=0.0, le=10.0,
        description="least seconds between two detector calls of one session",
    )
    max_sessions: int = Field(
        32, ge=1, le=10_000, description="sessions one ingress replica accepts before answering 503"
    )
    connect_timeout: float = Field(StreamPolicy.default_of("connect_timeout"), gt=0, le=300)
    idle_timeout: Optional[float] = Field(
        StreamPolicy.default_of("idle_timeout"), gt=0,
        description="no camera frame for this long ends a session (a vanished browser)",
    )
    offer_rate_per_s: Optional[float] = Field(
        2.0, gt=0, description="offers per second per client address; null for no limit"
    )
    offer_burst: int = Field(StreamPolicy.default_of("offer_burst"), ge=1)
    media_lag_target_ms: Optional[float] = Field(
        StreamPolicy.default_of("media_lag_target_ms"), gt=0,
        description="the ingress caps every page's upload lower while its media loop wakes later than "
        "this (overload keeps video live at a lower frame rate); null: never",
    )
    auth_token: Optional[SecretStr] = Field(
        None, description="when set: the UI asks for it as password, /webrtc/* need `Authorization: Bearer`"
    )
    admin_token: Optional[SecretStr] = Field(
        None,
        description="bearer token for GET /webrtc/sessions (session ids and per-session detail); null: that route is off",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="proxy addresses/networks (comma-separated) whose X-Forwarded-For / Forwarded names the client",
    )

    # --- outgoing video ----------------------------------------------------------------
    video_codec: Literal["vp8", "h264"] = Field(
        VideoEncoding.codec,
        description="codec of the video sent back (the other when the browser did not offer it); "
        "h264 (libx264 ultrafast) costs the server less per frame than vp8 (see component/encoding.py)",
    )
    camera_codec: Literal["vp8", "h264"] = Field(
        VideoEncoding.camera_codec,
        description="codec the answer asks the browser to send its camera in (the other is the fallback); "
        "h264 makes aiortc-based clients encode at libx264's slow default preset and saved the server nothing measured "
        "(see component/encoding.py)",
    )
    video_encoder_fast: bool = Field(
        VideoEncoding.fast,
        description="measured fast encoder options (H.264 ultrafast; VP8 cpu-used -10, no denoiser); false: aiortc's own",
    )
    video_max_bitrate: Optional[int] = Field(
        VideoEncoding.max_bitrate, ge=100_000, le=10_000_000,
        description="ceiling on the returned video's bitrate (bits/s) under the receiver's estimate; "
        "null: 1.2 Mbps for fast H.264 (its picture matched VP8's at 1.5), else aiortc's own (1.5 Mbps VP8, 3 Mbps H.264)",
    )

    # --- ICE ------------------------------------------------------------------------
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers for the browser and aiortc (JSON list of {urls, username, credential})",
    )
    ice_transport_policy: Literal["all", "relay"] = "all"
    ice_host_addresses: list[str] = Field(
        default_factory=list,
        description="addresses aiortc gathers host candidates on (comma-separated); empty: all interfaces",
    )
    ice_port_min: Optional[int] = Field(
        None, ge=1, le=65535, description="lowest UDP port for media (with ice_port_max); null: kernel-chosen"
    )
    ice_port_max: Optional[int] = Field(None, ge=1, le=65535, description="highest UDP port for media")
    ice_advertised_address: Optional[str] = Field(
        None, description="public IP of a 1:1 NAT in front of the ingress nodes (same ports); null: none"
    )

    # --- TURN REST: short-lived TURN credentials (see component.turn) ------------------
    turn_secret: Optional[SecretStr] = Field(
        None, description="the TURN server's static-auth-secret; set: credentials are minted per Start and per session"
    )
    turn_urls: list[str] = Field(
        default_factory=list, description="TURN servers that take minted credentials (comma-separated turn: urls)"
    )
    turn_ttl_s: int = Field(
        3600, ge=10, le=7 * 86400, description="lifetime of a minted credential; must outlast a session"
    )

    # --- ingress ----------------------------------------------------------------------
    ingress_replicas: int = Field(1, ge=1, le=64)
    ingress_num_cpus: float = Field(0.0, ge=0)
    ingress_max_ongoing_requests: int = Field(1000, ge=10)
    ingress_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each ingress replica needs (pin it to nodes with the UDP ports open)",
    )
    ingress_router: Literal["consistent_hash", "power_of_two"] = Field(
        "consistent_hash",
        description="consistent_hash: HTTP requests with the same x-session-id header reach the same replica",
    )

    # --- detector ----------------------------------------------------------------------
    detector_min_replicas: int = Field(1, ge=0, le=1000)
    detector_max_replicas: int = Field(2, ge=1, le=1000)
    detector_initial_replicas: Optional[int] = Field(None, ge=0, le=1000)
    detector_target_ongoing_requests: float = Field(
        4.0, gt=0, description="in-flight frames per detector replica the autoscaler aims for"
    )
    detector_upscale_delay_s: float = Field(3.0, ge=0)
    detector_downscale_delay_s: float = Field(30.0, ge=0)
    detector_look_back_period_s: Optional[float] = Field(
        None, gt=0, description="seconds of load the autoscaler averages; null: Serve's default (30)"
    )
    detector_num_cpus: float = Field(1.0, ge=0)
    detector_num_gpus: float = Field(0.0, ge=0)
    detector_priority: Literal["normal", "low", "idle"] = Field(
        "low",
        description="CPU priority of detector replicas: low (nice 10) / idle (SCHED_IDLE) let video "
        "on shared cores go first; normal: none (see deployments/priority.py)",
    )
    detector_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each detector replica needs"
    )
    detector_timeout_s: float = Field(
        5.0, gt=0, description="a frame not back from the detector by then is dropped"
    )
    detector_pack_wait_s: float = Field(
        0.012, ge=0, le=0.1,
        description="while a detector call is in flight, the ingress holds sessions' frames up to "
        "this long (at most max_batch_size) and sends them as one call; with none in flight a "
        "frame leaves at once. 0: one call per frame (deployments/frame_packer.py). Frame-by-frame "
        "models (haar, caffe, an unbatched callable) always get one call per frame",
    )
    # The detector's `user_config`: a deploy changing only that retunes live replicas.
    max_batch_size: MaxBatchSize = DEFAULT_BATCH.max_batch_size
    batch_wait_timeout_s: BatchWaitTimeout = DEFAULT_BATCH.batch_wait_timeout_s

    # --- model -----------------------------------------------------------------------------
    model: Literal["haar", "onnx", "caffe", "callable"] = "haar"
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    model_sha256: Optional[str] = None
    model_config_path: Optional[str] = None
    model_names: Optional[str] = None
    model_decoder: Literal["auto", "yolox", "fastestdet"] = "auto"
    model_input_size: Optional[int] = Field(None, gt=0)
    model_callable: Optional[str] = None
    model_batched: bool = False

    @field_validator(
        "time_limit", "detector_initial_replicas", "idle_timeout", "offer_rate_per_s", "auth_token", "admin_token",
        "turn_secret", "ice_port_min", "ice_port_max", "ice_advertised_address", "detector_look_back_period_s",
        mode="before",
    )
    @classmethod
    def _none(cls, value: Any) -> Any:
        """CLI spellings of null: `key=`, `key=none`, `key=null`."""
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value

    _split_lists = field_validator("ice_host_addresses", "trusted_proxies", "turn_urls", mode="before")(_split_csv)

    @field_validator("ice_servers", "detector_resources", "ingress_resources", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        """CLI values of list and dict fields arrive as JSON text; empty text: the field's
        own empty default."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else cls.model_fields[info.field_name].get_default(
                call_default_factory=True
            )
        return value

    @model_validator(mode="after")
    def _ice_valid(self) -> "AppArgs":
        # IceConfig's own checks, at start-up and under this object's argument names,
        # not later in a replica.
        try:
            self.ice()
        except ValidationError as exc:
            raise ValueError("; ".join(_ice_problem(e) for e in exc.errors())) from None
        return self

    @model_validator(mode="after")
    def _turn_valid(self) -> "AppArgs":
        if (self.turn_secret is None) != (not self.turn_urls):
            raise ValueError("set both turn_secret and turn_urls, or neither")
        if self.turn_secret is not None:
            self.turn_rest()  # url schemes and an empty secret fail here, by name
            longest = (self.time_limit or 0) + self.connect_timeout
            if self.time_limit is not None and self.turn_ttl_s < longest:
                raise ValueError(
                    f"turn_ttl_s ({self.turn_ttl_s}) must outlast a session "
                    f"(time_limit + connect_timeout = {longest:g} s): the TURN server refuses "
                    "an expired credential's refreshes"
                )
        return self

    def turn_rest(self) -> Optional[TurnRest]:
        if self.turn_secret is None:
            return None
        try:
            return TurnRest(urls=tuple(self.turn_urls), secret=self.turn_secret, ttl_s=self.turn_ttl_s)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"turn_urls / turn_secret: {problems}") from None

    @model_validator(mode="after")
    def _consistent(self) -> "AppArgs":
        if self.detector_min_replicas > self.detector_max_replicas:
            raise ValueError(
                f"detector_min_replicas ({self.detector_min_replicas}) exceeds "
                f"detector_max_replicas ({self.detector_max_replicas})"
            )
        initial = self.detector_initial_replicas
        if initial is not None and not (self.detector_min_replicas <= initial <= self.detector_max_replicas):
            raise ValueError("detector_initial_replicas must lie between the min and max replicas")
        return self

    @model_validator(mode="after")
    def _policy_valid(self) -> "AppArgs":
        # The policy's own invariants (e.g. trusted_proxies parse as networks) fail here,
        # at start-up, not in the ingress replica that builds it again.
        self.stream_policy()
        return self

    def stream_policy(self) -> StreamPolicy:
        """The one `StreamPolicy` every session of the app runs under."""
        return StreamPolicy(
            stream_every=self.stream_every,
            time_limit=self.time_limit,
            concurrency_limit=self.max_sessions,
            connect_timeout=self.connect_timeout,
            idle_timeout=self.idle_timeout,
            offer_rate=self.offer_rate_per_s,
            offer_burst=self.offer_burst,
            media_lag_target_ms=self.media_lag_target_ms,
            trusted_proxies=tuple(self.trusted_proxies),
            encoding=self.video_encoding(),
        )

    def ingress_settings(self) -> IngressSettings:
        """Everything the ingress deployment needs, built once here and handed to it."""
        model = self.model_spec()
        return IngressSettings(
            title=self.title,
            default_threshold=self.default_threshold,
            render=self.render,
            policy=self.stream_policy(),
            ice=self.ice(),
            model=model,
            detector_timeout_s=self.detector_timeout_s,
            pack_wait_s=self.detector_pack_wait_s,
            # Frame-by-frame models get one frame per call (ModelSpec.one_pass_per_batch).
            pack_max_frames=self.max_batch_size if model.one_pass_per_batch else 1,
            auth_token=self.auth_token,
            admin_token=self.admin_token,
        )

    def ice(self) -> IceConfig:
        return IceConfig(
            servers=tuple(self.ice_servers),
            transport_policy=self.ice_transport_policy,
            host_addresses=tuple(self.ice_host_addresses),
            port_min=self.ice_port_min,
            port_max=self.ice_port_max,
            advertised_address=self.ice_advertised_address,
            turn_rest=self.turn_rest(),
        )

    def video_encoding(self) -> VideoEncoding:
        return VideoEncoding(
            codec=self.video_codec, camera_codec=self.camera_codec,
            fast=self.video_encoder_fast, max_bitrate=self.video_max_bitrate,
        )

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            kind=self.model,
            path=self.model_path,
            url=self.model_url,
            sha256=self.model_sha256,
            config=self.model_config_path,
            names=self.model_names,
            decoder=self.model_decoder,
            input_size=self.model_input_size,
            callable=self.model_callable,
            batched=self.model_batched,
            num_gpus=self.detector_num_gpus,
            # Ray's num_cpus is bookkeeping: bound the libraries' thread pools to it.
            num_threads=inference_threads(self.detector_num_cpus),
        )

    def detector_batch_config(self) -> BatchConfig:
        return BatchConfig(max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s)

    def detector_autoscaling(self) -> dict[str, Any]:
        """Serve autoscaling config; with one frame in flight per session, the
        target of in-flight frames is roughly the sessions one replica serves. The
        policy counts frames, not calls: see `deployments.autoscaling`."""
        config: dict[str, Any] = {
            "policy": {"policy_function": AUTOSCALING_POLICY},
            "min_replicas": self.detector_min_replicas,
            "max_replicas": self.detector_max_replicas,
            "target_ongoing_requests": self.detector_target_ongoing_requests,
            "upscale_delay_s": self.detector_upscale_delay_s,
            "downscale_delay_s": self.detector_downscale_delay_s,
        }
        if self.detector_initial_replicas is not None:
            config["initial_replicas"] = self.detector_initial_replicas
        if self.detector_look_back_period_s is not None:
            config["look_back_period_s"] = self.detector_look_back_period_s
        return config
