"""Settings from keywords and AGENTGYM_* variables; a light import; joining the host's provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.config import Settings

HEAVY = ("torch", "transformers", "agentlightning", "langchain_core", "langchain", "autogen_agentchat",
         "autogen_core", "crewai", "pyarrow", "peft", "trl", "duckdb")  # fmt: skip


def _python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_loads_no_framework_torch_or_agent_lightning() -> None:
    out = _python(
        f"""
        import sys
        import agentgym_runtime as agentgym
        agentgym.train_online, agentgym.tool, agentgym.episode, agentgym.configure
        print([m for m in {HEAVY!r} if m in sys.modules])
        """
    )
    # duckdb is opened lazily on the first write, not at import or decoration time.
    assert out.strip() == "[]"


def test_settings_from_environment(tmp_path: Path) -> None:
    env = {
        "AGENTGYM_HOME": str(tmp_path / "h"),
        "AGENTGYM_SERVICE_NAME": "billing",
        "AGENTGYM_CAPTURE_CONTENT": "false",
        "AGENTGYM_MAX_ATTRIBUTE_BYTES": "4096",
        "AGENTGYM_REDACT": "iban, ssn",
    }
    out = _python(
        """
        import json
        from agentgym_runtime.config import Settings
        s = Settings()
        print(json.dumps([str(s.home), s.service_name, s.capture_content, s.max_attribute_bytes, s.redact, s.store_path]))
        """,
        **env,
    )
    home, service, capture, max_bytes, redact, store = json.loads(out)
    assert (home, service, capture, max_bytes, redact) == (str(tmp_path / "h"), "billing", False, 4096, ["iban", "ssn"])
    assert store == str(tmp_path / "h" / "traces.duckdb")


def test_keywords_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTGYM_SERVICE_NAME", "from-env")
    assert Settings(service_name="from-code", home=tmp_path).service_name == "from-code"
    assert Settings(home=tmp_path).service_name == "from-env"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attribute_bytes": 10}, "max_attribute_bytes: Input should be greater than or equal to 64"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"redact": ["("]}, "redact: Value error, redact pattern '(' is not a valid regular expression"),
        ({"max_export_batch_size": 10, "max_queue_size": 5}, "must not exceed max_queue_size (5)"),
        ({"home": "  "}, "home: Value error, home must not be empty"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(agentgym.ConfigurationError) as caught:
        agentgym.configure(**kwargs)
    assert message in str(caught.value)


def test_capture_content_off_keeps_metadata_only(tmp_path: Path) -> None:
    runtime = agentgym.configure(home=tmp_path, capture_content=False, strict=True)
    try:

        @agentgym.tool
        def secret_lookup(query: str) -> str:
            return "private result"

        @agentgym.train_online(name="private")
        def agent(query: str) -> str:
            return secret_lookup(query=query)

        agent("private question")
        assert agentgym.flush()
        rows = runtime.store.query(
            "SELECT tool_name, tool_outcome, tool_arguments, tool_result FROM spans WHERE tool_name IS NOT NULL"
        )
        assert rows == [("secret_lookup", "ok", None, None)]
        assert runtime.store.query("SELECT input, output FROM episodes") == [(None, None)]
    finally:
        agentgym.shutdown()


def test_joins_the_host_tracer_provider_and_keeps_its_exporters(tmp_path: Path) -> None:
    out = _python(
        f"""
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        host_exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(host_exporter))
        trace.set_tracer_provider(provider)

        import agentgym_runtime as agentgym
        runtime = agentgym.configure(home={str(tmp_path)!r})
        host_tracer = trace.get_tracer("host-app")

        @agentgym.tool
        def ping() -> str:
            return "pong"

        @agentgym.train_online(name="joined")
        def agent() -> str:
            with host_tracer.start_as_current_span("host http call"):
                pass
            return ping()

        with host_tracer.start_as_current_span("unrelated request"):
            pass
        agent()
        agentgym.flush()
        stored = [r[0] for r in runtime.store.query("SELECT name FROM spans ORDER BY start_unix_nano")]
        host_names = sorted(s.name for s in host_exporter.get_finished_spans())
        print(json.dumps({{"host_provider": runtime.host_provider, "stored": stored, "host": host_names}}))
        """
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert report["host_provider"] is True
    # The host's exporter still sees everything, ours included.
    assert report["host"] == ["execute_tool ping", "host http call", "invoke_agent joined", "unrelated request"]
    # The store gets the episode's spans (a host span inside the episode is stamped and kept),
    # never the host's unrelated traffic.
    assert report["stored"] == ["invoke_agent joined", "host http call", "execute_tool ping"]


def test_installs_a_provider_when_the_host_has_none(tmp_path: Path) -> None:
    out = _python(
        f"""
        from opentelemetry import trace
        import agentgym_runtime as agentgym
        runtime = agentgym.configure(home={str(tmp_path)!r}, service_name="svc")
        provider = trace.get_tracer_provider()
        print(type(provider).__name__, runtime.host_provider, provider.resource.attributes["service.name"])
        """
    )
    assert out.split() == ["TracerProvider", "False", "svc"]
