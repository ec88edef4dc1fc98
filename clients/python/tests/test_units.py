"""Pure unit tests: configuration, encoders, BroadcastFilter semantics, layer chains."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import uuid
from pathlib import Path

import pytest

from tatzelwurm import compat, config, encoding
from tatzelwurm import protocol as p
from tatzelwurm.client import LayerChain
from tatzelwurm.communicator import _endpoint_args, server_filters
from tatzelwurm.worker import CancelToken, TaskKilled


def test_parse_address_forms() -> None:
    assert config.parse_address("127.0.0.1:7601") == ("127.0.0.1", 7601, None)
    assert config.parse_address("tcp://example.org:9") == ("example.org", 9, None)
    assert config.parse_address("tatzelwurm://s3cret@host:1234") == ("host", 1234, "s3cret")
    assert config.parse_address("host:1?token=abc") == ("host", 1, "abc")
    assert config.parse_address("[::1]:5") == ("::1", 5, None)
    with pytest.raises(config.ConfigurationError):
        config.parse_address("host:notaport")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TATZELWURM_SERVER", "TATZELWURM_TOKEN", "TATZELWURM_DATA", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "address").write_text("127.0.0.1:1111\n")
    (data / "token").write_text("file-token\n")
    assert config.resolve_endpoint(data_dir=data) == config.Endpoint("127.0.0.1", 1111, "file-token")
    monkeypatch.setenv("TATZELWURM_DATA", str(data))
    assert config.resolve_endpoint().port == 1111
    monkeypatch.setenv("TATZELWURM_SERVER", "10.0.0.1:2222")
    monkeypatch.setenv("TATZELWURM_TOKEN", "env-token")
    assert config.resolve_endpoint() == config.Endpoint("10.0.0.1", 2222, "env-token")
    assert config.resolve_endpoint("h:3", "arg-token") == config.Endpoint("h", 3, "arg-token")
    monkeypatch.delenv("TATZELWURM_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert config.default_data_dir() == tmp_path / "xdg" / "tatzelwurm"
    monkeypatch.delenv("TATZELWURM_TOKEN")
    monkeypatch.delenv("TATZELWURM_SERVER")
    with pytest.raises(config.ConfigurationError, match="no tatzelwurm token"):
        config.resolve_endpoint()
    assert config.resolve_endpoint(token="t") == config.Endpoint("127.0.0.1", 7600, "t")


def test_endpoint_args_from_kiwipy_connection_params() -> None:
    assert _endpoint_args(None) == {}
    assert _endpoint_args("h:1") == {"address": "h:1"}
    assert _endpoint_args({"url": "amqp://guest:guest@127.0.0.1/"}) == {}  # RabbitMQ URL: ignored
    assert _endpoint_args({"url": "h:1", "token": "t", "data_dir": "/d"}) == {"address": "h:1", "token": "t",
                                                                              "data_dir": "/d"}


@pytest.mark.parametrize("pair", ["msgpack", "yaml"])
def test_encoders_round_trip(pair: str) -> None:
    if pair == "yaml" and not encoding.HAVE_YAML:
        pytest.skip("PyYAML not installed")
    enc, dec = ((encoding.msgpack_encoder, encoding.msgpack_decoder) if pair == "msgpack"
                else (encoding.yaml_encoder, encoding.yaml_decoder))  # type: ignore[attr-defined]
    pid = uuid.uuid4()
    value = {"pid": pid, "pair": (1, "x"), "nested": [{"a": None, "b": True, "c": 1.5}], 7: "int key", "s": "ü"}
    assert dec(enc(value)) == value
    assert dec(enc(((value, False)))) == (value, False)


def test_default_codec_is_yaml_when_available() -> None:
    assert encoding.DEFAULT_ENCODER is (encoding.yaml_encoder if encoding.HAVE_YAML else encoding.msgpack_encoder)


def test_broadcast_filter_fallback_matches_kiwipy() -> None:
    got: list[object] = []
    rec = lambda comm, body, sender, subject, cid: got.append(body)  # noqa: E731
    f = compat.BroadcastFilter(rec, subject="state_changed.*", sender="alice.jones")
    f(None, 1, "alice.jones.sr", "state_changed.a.b", None)   # prefix match
    f(None, 2, "aliceXjones", "state_changed.a", None)         # '.' literal
    f(None, 3, None, None, None)                              # None passes
    f(None, 4, "alice.jones", "other", None)
    g = compat.BroadcastFilter(rec, subject=re.compile("^(?!state_changed).*"))
    g(None, 5, "x", "state_changed.x", None)
    g(None, 6, "x", "hello", None)
    h = compat.BroadcastFilter(rec, sender=uuid.UUID(int=1))
    h(None, 7, uuid.UUID(int=1), None, None)
    h(None, 8, uuid.UUID(int=2), None, None)
    assert got == [1, 3, 6, 7]


def test_server_filters_translation() -> None:
    f = compat.BroadcastFilter(lambda *a: None, subject="state_changed.*")
    assert server_filters(f) == (None, p.Filter(p.FilterKind.REGEX, "state_changed[.].*"))
    two = compat.BroadcastFilter(lambda *a: None, subject="a")
    two.add_subject_filter("b")
    assert server_filters(two) == (None, None)  # several filters: only client-side
    assert server_filters(compat.BroadcastFilter(lambda *a: None, subject=re.compile("x", re.I))) == (None, None)
    assert server_filters(compat.BroadcastFilter(lambda *a: None, subject=re.compile("(?P<n>x)"))) == (None, None)


def test_layer_chain_builds_one_future_per_layer() -> None:
    chain = LayerChain(concurrent.futures.Future)
    chain.layer(1)
    level1 = chain.root.result(0)
    assert isinstance(level1, concurrent.futures.Future) and not level1.done()
    chain.layer(1)  # repeated notices (after a re-sent WaitTask) change nothing
    chain.finish_task(p.TaskOutcome(1, 1, 0, b"\x05", None, 2), lambda b: b[0], RuntimeError)
    assert level1.result(0).result(0) == 5
    failed = LayerChain(concurrent.futures.Future)
    failed.finish_task(p.TaskOutcome(1, 1, 3, None, "bad", 0), bytes, compat.RemoteException)
    with pytest.raises(compat.RemoteException, match="bad"):
        failed.root.result(0)
    killed = LayerChain(concurrent.futures.Future)
    killed.finish_task(p.TaskOutcome(1, 1, -1, None, None, 0), bytes, RuntimeError)
    assert killed.root.cancelled()


async def test_cancel_token_pause_and_kill() -> None:
    token = CancelToken()
    token.pause()
    waiter = asyncio.ensure_future(token.checkpoint())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    token.resume()
    await asyncio.wait_for(waiter, 1)
    assert token.wait_if_paused(0) is True
    token.kill()
    with pytest.raises(TaskKilled):
        token.check()
    with pytest.raises(TaskKilled):
        await token.checkpoint()
