"""Specification of user apps, the messenger's format conversion and the guardian's alerting."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from robeing.agents.app import App, Middleware, call_handler, load_app
from robeing.agents.formats import FORMATS, convert, from_records, to_records
from robeing.agents.roles.guardian import DeadLetterWatch
from robeing.protocol.errors import ConfigError, Reject

ModuleFactory = Callable[[str], str]


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleFactory]:
    """Factory: write an importable module with the given source; returns its unique name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str) -> str:
        name = f"robeing_test_app_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


# -- App ------------------------------------------------------------------------


def test_handler_registers_and_returns_the_function() -> None:
    """Given an app, When a function is decorated as the handler of 'greet', Expect it
    registered under that type and returned unchanged."""
    app = App()

    def greet(msg: Any) -> str:
        return "hi"

    decorated = app.handler("greet")(greet)

    assert decorated is greet
    assert app.handlers == {"greet": greet}


def test_duplicate_handler_is_refused() -> None:
    """Given a handler for 'greet', When another is registered for 'greet', Expect ConfigError
    and the first one kept."""
    app = App()

    @app.handler("greet")
    def first(msg: Any) -> None: ...

    with pytest.raises(ConfigError, match="greet"):

        @app.handler("greet")
        def second(msg: Any) -> None: ...

    assert app.handlers["greet"] is first


def test_lifecycle_hooks_are_recorded_in_order() -> None:
    """Given on_start and on_stop decorators, Expect the hooks recorded in declaration order
    and the functions returned unchanged."""
    app = App()

    def a(agent: Any) -> None: ...
    def b(agent: Any) -> None: ...
    def c(agent: Any) -> None: ...

    assert app.on_start(a) is a
    app.on_start(b)
    app.on_stop(c)

    assert app.start_hooks == [a, b]
    assert app.stop_hooks == [c]


def test_include_merges_handlers_middleware_and_hooks() -> None:
    """Given two apps, When one includes the other, Expect the union of handlers and the
    other's middleware and hooks appended after its own; the included app unchanged."""
    main, extra = App("main"), App("extra")
    mw_main, mw_extra = Middleware(), Middleware()
    main.middleware.append(mw_main)
    extra.middleware.append(mw_extra)

    @main.handler("a")
    def a(msg: Any) -> None: ...

    @extra.handler("b")
    def b(msg: Any) -> None: ...

    def hook(agent: Any) -> None: ...

    extra.on_start(hook)
    extra.on_stop(hook)

    main.include(extra)

    assert main.handlers == {"a": a, "b": b}
    assert main.middleware == [mw_main, mw_extra]
    assert main.start_hooks == [hook] and main.stop_hooks == [hook]
    assert extra.handlers == {"b": b}


def test_include_refuses_conflicting_handlers() -> None:
    """Given two apps both handling 'a', When one includes the other, Expect ConfigError."""
    main, extra = App(), App()
    main.handler("a")(lambda msg: None)
    extra.handler("a")(lambda msg: None)

    with pytest.raises(ConfigError, match="'a'"):
        main.include(extra)


def test_apps_do_not_share_registries() -> None:
    """Given two apps, When one registers a handler, Expect the other unaffected."""
    one, two = App(), App()
    one.handler("x")(lambda msg: None)

    assert two.handlers == {} and two.middleware == [] and two.start_hooks == []


async def test_call_handler_runs_sync_and_async_handlers() -> None:
    """Given a sync and an async handler, When called, Expect both results returned."""

    def sync(msg: Any) -> Any:
        return ("sync", msg)

    async def asynchronous(msg: Any) -> Any:
        return ("async", msg)

    assert await call_handler(sync, "m") == ("sync", "m")  # type: ignore[arg-type]
    assert await call_handler(asynchronous, "m") == ("async", "m")  # type: ignore[arg-type]


def test_middleware_hooks_are_no_ops() -> None:
    """Expect the base Middleware's hooks to accept their arguments and do nothing."""
    mw = Middleware()

    assert mw.before_handle(None, None) is None  # type: ignore[arg-type,func-returns-value]
    assert mw.after_handle(None, None, None, None) is None  # type: ignore[arg-type,func-returns-value]
    assert mw.on_rejected(None, "reason", "detail") is None  # type: ignore[arg-type,func-returns-value]


# -- load_app ---------------------------------------------------------------------


def test_load_app_uses_the_module_app(make_module: ModuleFactory) -> None:
    """Given a module with `app = App()`, When loaded by module name, Expect that app."""
    name = make_module(
        """
        from robeing.agents.app import App
        app = App(name="mine")
        """
    )

    assert load_app(name).name == "mine"


def test_load_app_with_an_attribute(make_module: ModuleFactory) -> None:
    """Given a module with an App under another name, When loaded as module:attr, Expect it."""
    name = make_module(
        """
        from robeing.agents.app import App
        other = App(name="other")
        """
    )

    assert load_app(f"{name}:other").name == "other"


def test_load_app_of_a_missing_module() -> None:
    """Given a module that does not exist, When loaded, Expect ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot import app module 'no_such_module_xyz'"):
        load_app("no_such_module_xyz")


@pytest.mark.parametrize(
    "source",
    ["raise RuntimeError('boom at import')", "def broken(:\n    pass\n"],
    ids=["raises", "syntax-error"],
)
def test_load_app_of_a_module_that_fails_to_import(make_module: ModuleFactory, source: str) -> None:
    """Given a module that raises or does not compile, When loaded, Expect ConfigError."""
    name = make_module(source)

    with pytest.raises(ConfigError, match="cannot import app module"):
        load_app(name)


@pytest.mark.parametrize(
    ("source", "suffix"),
    [
        ("x = 1\n", ""),
        ("app = {'handlers': {}}\n", ""),
        ("from robeing.agents.app import App\napp = App()\n", ":missing"),
        ("from robeing.agents.app import App\nnot_app = 3\n", ":not_app"),
    ],
    ids=["no-app", "app-not-an-App", "missing-attr", "attr-not-an-App"],
)
def test_load_app_without_an_app(make_module: ModuleFactory, source: str, suffix: str) -> None:
    """Given a module without an App where the spec points, When loaded, Expect ConfigError
    explaining what is expected."""
    name = make_module(source)

    with pytest.raises(ConfigError, match="has no robeing App"):
        load_app(name + suffix)


# -- messenger: convert -------------------------------------------------------------

RECORDS = [{"name": "ada", "age": 36}, {"name": "alan", "age": 41}]


def test_json_to_records_and_back() -> None:
    """Given JSON text, When converted to records and back, Expect the same data as compact,
    key-sorted JSON."""
    text = '[{"name": "ada", "age": 36}, {"name": "alan", "age": 41}]'

    assert convert(text, "json", "records") == RECORDS
    assert convert(RECORDS, "records", "json") == (
        '[{"age":36,"name":"ada"},{"age":41,"name":"alan"}]'
    )


def test_msgpack_round_trip() -> None:
    """Given records, When converted to msgpack and back, Expect them unchanged."""
    packed = convert(RECORDS, "records", "msgpack")

    assert isinstance(packed, bytes)
    assert msgpack.unpackb(packed) == RECORDS
    assert convert(packed, "msgpack", "records") == RECORDS


def test_records_to_csv_uses_the_union_of_columns() -> None:
    """Given records with different keys, When rendered as CSV, Expect a header with every
    column in first-seen order and empty cells where a record lacks one."""
    rows = [{"a": 1, "b": 2}, {"b": 3, "c": "x,y"}]

    assert convert(rows, "records", "csv") == 'a,b,c\n1,2,\n,3,"x,y"\n'


def test_csv_to_json_reads_the_header() -> None:
    """Given CSV with a header row, When converted to JSON, Expect one object per row
    (values are text: CSV has no types)."""
    out = convert("name,age\nada,36\nalan,41\n", "csv", "json")

    assert json.loads(out) == [{"name": "ada", "age": "36"}, {"name": "alan", "age": "41"}]


def test_every_pair_of_formats_converts() -> None:
    """Given text-valued records, When converted through every pair of formats, Expect the
    data back unchanged."""
    rows = [{"k": "v1", "n": "1"}, {"k": "v2", "n": "2"}]
    for src in FORMATS:
        data = from_records(rows, src)
        for dst in FORMATS:
            assert to_records(convert(data, src, dst), dst) == rows, (src, dst)


@pytest.mark.parametrize(
    ("data", "src", "dst", "message"),
    [
        ("{}", "xml", "json", "unknown format 'xml'"),
        ("{}", "json", "yaml", "unknown format 'yaml'"),
        ("{not json", "json", "records", "cannot parse json"),
        ("text", "msgpack", "json", "msgpack data must be bytes"),
        (b"\xc1", "msgpack", "json", "cannot parse msgpack"),
        (b"a,b", "csv", "json", "csv data must be text"),
        ('{"a": 1}', "json", "csv", "csv output needs a list of records"),
        ("[1, 2]", "json", "csv", "csv output needs a list of records"),
        ('[{"a": {"b": 1}}]', "json", "csv", "csv cells must be scalars"),
        ('[{"a": [1]}]', "json", "csv", "csv cells must be scalars"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(data: Any, src: str, dst: str, message: str) -> None:
    """Given data that does not parse, or that the target format cannot hold, When converted,
    Expect Reject naming the problem."""
    with pytest.raises(Reject) as exc:
        convert(data, src, dst)

    assert message in exc.value.reason


def test_unknown_format_lists_the_valid_ones() -> None:
    """Given an unknown format, Expect the Reject to list json, msgpack, csv and records."""
    with pytest.raises(Reject) as exc:
        convert("{}", "json", "toml")

    assert all(fmt in exc.value.reason for fmt in FORMATS)


@pytest.mark.parametrize(
    ("data", "src", "dst"),
    [
        (msgpack.packb({"blob": b"\x00\x01"}), "msgpack", "json"),
        ('{"n": 18446744073709551616}', "json", "msgpack"),
    ],
    ids=["binary-to-json", "huge-int-to-msgpack"],
)
def test_values_the_target_format_cannot_hold_are_rejected(data: Any, src: str, dst: str) -> None:
    """Given data that parses but holds values the target cannot represent (bytes in JSON,
    integers beyond 64 bits in msgpack), When converted, Expect Reject, not a crash."""
    with pytest.raises(Reject):
        convert(data, src, dst)


# -- guardian: DeadLetterWatch ----------------------------------------------------------

WatchFactory = Callable[..., DeadLetterWatch]


@pytest.fixture
def make_watch() -> WatchFactory:
    def make(threshold: int = 3, window: float = 10.0) -> DeadLetterWatch:
        return DeadLetterWatch(threshold=threshold, window=window)

    return make


def observe_many(watch: DeadLetterWatch, sender: str | None, times: list[float]) -> list[Any]:
    return [watch.observe("signature", "robeing.agent.w1", sender, t) for t in times]


def test_alert_when_a_sender_crosses_the_threshold(make_watch: WatchFactory) -> None:
    """Given a threshold of 3 in 10 s, When one sender's third rejection arrives within the
    window, Expect an alert about that sender exactly then."""
    watch = make_watch()

    assert observe_many(watch, "mallory", [0.0, 1.0, 2.0]) == [None, None, "mallory"]


def test_no_second_alert_within_the_window(make_watch: WatchFactory) -> None:
    """Given an alert at t=2, When rejections keep coming within the window, Expect silence;
    once the window has passed and the threshold is crossed again, Expect a new alert."""
    watch = make_watch()
    observe_many(watch, "mallory", [0.0, 1.0, 2.0])

    assert observe_many(watch, "mallory", [3.0, 5.0, 12.0]) == [None, None, None]
    assert watch.observe("signature", "q", "mallory", 12.5) == "mallory"


def test_spread_out_rejections_never_alert(make_watch: WatchFactory) -> None:
    """Given rejections from one sender further apart than the window allows to accumulate,
    Expect no alert however many there are."""
    watch = make_watch()

    assert set(observe_many(watch, "slow", [i * 6.0 for i in range(20)])) == {None}
    assert watch.by_sender["slow"] == 20


def test_senders_are_counted_separately(make_watch: WatchFactory) -> None:
    """Given two senders with two rejections each in the window, Expect no alert
    (the threshold is per sender)."""
    watch = make_watch()

    results = [watch.observe("decode", "q", s, t) for t, s in enumerate(["a", "b", "a", "b"])]

    assert results == [None, None, None, None]


def test_unknown_sender_is_counted_but_never_alerted(make_watch: WatchFactory) -> None:
    """Given dead letters whose sender cannot be read, Expect them counted by reason and queue
    and no alert."""
    watch = make_watch(threshold=1)

    assert observe_many(watch, None, [0.0, 0.1, 0.2]) == [None, None, None]
    assert watch.by_reason["signature"] == 3
    assert watch.by_sender == {}


def test_report_summarises_counts(make_watch: WatchFactory) -> None:
    """Given dead letters of several reasons, queues and senders, Expect the report to total
    them and list at most ten top senders."""
    watch = make_watch(threshold=1000)
    for i in range(12):
        for _ in range(i + 1):
            watch.observe("decode", "robeing.agent.w1", f"s{i}", 0.0)
    watch.observe("timestamp", "robeing.agent.w2", None, 0.0)

    report = watch.report()

    assert report["dead_letters"] == 79
    assert report["by_reason"] == {"decode": 78, "timestamp": 1}
    assert report["by_queue"] == {"robeing.agent.w1": 78, "robeing.agent.w2": 1}
    assert len(report["top_senders"]) == 10
    assert report["top_senders"]["s11"] == 12
    assert "s0" not in report["top_senders"]


def test_quarantine_needs_the_threshold_from_two_reporters_within_the_window() -> None:
    """Given 10 verified refusals of one sender, all reported by one agent, Expect no
    quarantine (one compromised reporter cannot get an honest agent quarantined); with a
    second reporter, Expect it; once the refusals age out of the window, Expect none."""
    watch = DeadLetterWatch(threshold=1000, window=10.0, min_reporters=2)
    for t in range(10):
        watch.observe("no_handler", "q", "mallory", float(t) / 10, reporter="w1")
    assert not watch.supports_quarantine("mallory", 10, now=1.0)
    watch.observe("no_handler", "q", "mallory", 1.0, reporter="w2")
    assert watch.supports_quarantine("mallory", 10, now=1.0)
    assert not watch.supports_quarantine("mallory", 10, now=11.0)
