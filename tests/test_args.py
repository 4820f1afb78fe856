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
