"""`serve run serve_app:app key=value` goes through Serve's own builder call; these
tests use that same function, so what passes here passes on the command line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve import Application

import serve_app
from serve_app import AppArgs


def build(**cli: str) -> Application:
    return call_user_app_builder_with_args_if_necessary(serve_app.app, cli)


def test_builder_runs_with_no_args_and_default_app_is_bound():
    assert isinstance(build(), Application)
    assert isinstance(serve_app.default_app, Application)


def test_cli_strings_become_typed_values():
    args = AppArgs.model_validate(
        {"time_limit": "20", "max_batch_size": "16", "detector_max_replicas": "4",
         "ice_host_addresses": "127.0.0.1,::1"}
    )
    assert args.time_limit == 20.0 and args.max_batch_size == 16
    assert args.detector_max_replicas == 4
    assert args.ice().host_addresses == ("127.0.0.1", "::1")
    assert isinstance(build(time_limit="20", max_batch_size="16", detector_max_replicas="4"), Application)


def test_ice_servers_from_json_reach_both_ends():
    args = AppArgs.model_validate(
        {"ice_servers": '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "p"}]'}
    )
    browser = args.ice().browser_configuration()
    assert browser["iceServers"] == [{"urls": ["turn:turn.example:3478"], "username": "u", "credential": "p"}]
    rtc = args.ice().rtc_configuration()
    assert rtc.iceServers[0].urls == ["turn:turn.example:3478"]


def test_render_choice_from_the_command_line():
    assert AppArgs().render == "server"
    assert AppArgs.model_validate({"render": "browser"}).render == "browser"
    assert isinstance(build(render="browser"), Application)


def test_time_limit_none_disables_it():
    assert AppArgs.model_validate({"time_limit": "none"}).time_limit is None


@pytest.mark.parametrize(
    "cli, name",
    [
        ({"tme_limit": "3"}, "tme_limit"),
        ({"max_batch_size": "0"}, "max_batch_size"),
        ({"time_limit": "-1"}, "time_limit"),
        ({"stream_every": "soon"}, "stream_every"),
        ({"ice_servers": '[{"urls": "http://x"}]'}, "ice_servers"),
        ({"model": "resnet"}, "model"),
        ({"render": "gpu"}, "render"),
    ],
)
def test_bad_args_fail_at_startup_naming_the_argument(cli, name):
    with pytest.raises(ValidationError) as err:
        build(**cli)
    assert name in str(err.value)


def test_min_above_max_replicas_is_refused():
    with pytest.raises(ValidationError, match="detector_min_replicas"):
        build(detector_min_replicas="3", detector_max_replicas="2")


def test_secrets_stay_out_of_reprs():
    args = AppArgs.model_validate({
        "auth_token": "tok-123",
        "ice_servers": '[{"urls": "turn:t:3478", "username": "u", "credential": "cred-456"}]',
    })
    shown = repr(args) + str(args) + repr(args.ice())
    assert "tok-123" not in shown and "cred-456" not in shown
    # ...but the browser of a session gets the TURN credential it needs.
    assert args.ice().browser_configuration()["iceServers"][0]["credential"] == "cred-456"


def test_stream_policy_carries_every_session_setting():
    """`AppArgs` -> `StreamPolicy` -> the ingress: each value set on the command line
    arrives, none is replaced by a default on the way."""
    from component.encoding import VideoEncoding

    args = AppArgs.model_validate({
        "stream_every": "0.2", "time_limit": "45", "max_sessions": "7", "connect_timeout": "9",
        "idle_timeout": "4", "offer_rate_per_s": "3", "offer_burst": "5",
        "trusted_proxies": "10.0.0.0/8", "video_codec": "vp8", "camera_codec": "h264",
        "video_encoder_fast": "false", "video_max_bitrate": "900000",
    })
    policy = args.stream_policy()
    assert (policy.stream_every, policy.time_limit, policy.concurrency_limit, policy.connect_timeout) == (
        0.2, 45.0, 7, 9.0
    )
    assert (policy.idle_timeout, policy.offer_rate, policy.offer_burst) == (4.0, 3.0, 5)
    assert policy.trusted_proxies == ("10.0.0.0/8",)
    assert policy.encoding == VideoEncoding(codec="vp8", camera_codec="h264", fast=False, max_bitrate=900_000)
    settings = args.ingress_settings()
    assert settings.policy == policy and settings.ice == args.ice() and settings.model == args.model_spec()
    assert (settings.title, settings.default_threshold, settings.render) == (
        args.title, args.default_threshold, args.render
    )


def test_defaults_shared_with_the_component_come_from_the_policy():
    from component.policy import StreamPolicy

    args, policy = AppArgs(), StreamPolicy()
    for name in ("stream_every", "connect_timeout", "idle_timeout", "offer_burst"):
        assert getattr(args, name) == getattr(policy, name), name
    assert args.video_encoding() == policy.encoding


def test_empty_cli_values_mean_none_or_empty():
    args = AppArgs.model_validate(
        {"ice_port_min": "", "ice_advertised_address": "null", "detector_look_back_period_s": "none",
         "ingress_resources": "", "detector_resources": " ", "ice_servers": ""}
    )
    assert args.ice_port_min is None and args.ice_advertised_address is None
    assert args.detector_look_back_period_s is None
    assert args.ingress_resources == {} and args.detector_resources == {} and args.ice_servers == []


def test_a_bad_trusted_proxy_fails_at_startup_by_name():
    with pytest.raises(ValidationError, match="not-an-ip"):
        build(trusted_proxies="10.0.0.0/8,not-an-ip")


def test_deployments_import_nothing_from_serve_app():
    """serve_app builds the application and imports deployments, never the reverse."""
    import subprocess
    import sys

    code = (
        "import sys, deployments.ingress, deployments.page\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'serve_app'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "model,extra,packs",
    [("haar", {}, False), ("caffe", {}, False), ("onnx", {}, True),
     ("callable", {"model_callable": "pkg.mod:fn", "model_batched": "true"}, True),
     ("callable", {"model_callable": "pkg.mod:fn"}, False)],
)  # fmt: skip
def test_only_models_that_batch_in_one_pass_get_packed_calls(model, extra, packs):
    """A pack's answers come back together: on a frame-by-frame model each frame would
    wait for the pack's last (deployments/models/spec.py, one_pass_per_batch)."""
    args = AppArgs.model_validate({"model": model, "max_batch_size": "6", **extra})
    assert args.model_spec().one_pass_per_batch is packs
    assert args.ingress_settings().pack_max_frames == (6 if packs else 1)
