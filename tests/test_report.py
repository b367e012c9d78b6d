"""Tests of harness/report.py and harness/report_html.py: JUnit XML against the common JUnit
schema shape and read back; Markdown and HTML escape untrusted outputs; HTML is self-contained."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.compare import Settings, compare_runs
from harness.config import GatePolicy
from harness.gate import decide
from harness.report import comparison_markdown, gate_markdown, junit_xml, md_cell
from harness.report_html import html_report
from harness.store import ResultRow, ScoreRow
from tests.test_compare import row, run

FAST = Settings(resamples=2000, seed=0)
EVIL = "</script><script>alert(1)</script> | @octocat [x](http://evil) <img src=x> \x01"

# The shape CI systems (Jenkins, GitLab, GitHub test reporters) read: the common JUnit schema.
JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:complexType name="outcome">
    <xs:simpleContent>
      <xs:extension base="xs:string">
        <xs:attribute name="message" type="xs:string"/>
        <xs:attribute name="type" type="xs:string"/>
      </xs:extension>
    </xs:simpleContent>
  </xs:complexType>
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence><xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded"/></xs:sequence>
      <xs:attribute name="name" type="xs:string"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal"/>
    </xs:complexType>
  </xs:element>
  <xs:element name="testsuite">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="properties" minOccurs="0">
          <xs:complexType><xs:sequence>
            <xs:element name="property" minOccurs="0" maxOccurs="unbounded">
              <xs:complexType>
                <xs:attribute name="name" type="xs:string" use="required"/>
                <xs:attribute name="value" type="xs:string" use="required"/>
              </xs:complexType>
            </xs:element>
          </xs:sequence></xs:complexType>
        </xs:element>
        <xs:element name="testcase" minOccurs="0" maxOccurs="unbounded">
          <xs:complexType>
            <xs:choice minOccurs="0" maxOccurs="unbounded">
              <xs:element name="skipped" type="outcome"/>
              <xs:element name="error" type="outcome"/>
              <xs:element name="failure" type="outcome"/>
              <xs:element name="system-out" type="xs:string"/>
              <xs:element name="system-err" type="xs:string"/>
            </xs:choice>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="classname" type="xs:string" use="required"/>
            <xs:attribute name="time" type="xs:decimal" use="required"/>
          </xs:complexType>
        </xs:element>
        <xs:element name="system-out" type="xs:string" minOccurs="0"/>
        <xs:element name="system-err" type="xs:string" minOccurs="0"/>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal" use="required"/>
      <xs:attribute name="timestamp" type="xs:dateTime"/>
      <xs:attribute name="hostname" type="xs:string"/>
      <xs:attribute name="id" type="xs:string"/>
      <xs:attribute name="package" type="xs:string"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""


def two_scorer_row(case: str, first: str, second: str, output: str = "out") -> ResultRow:
    result = row(
        case, "pass" if first == second == "pass" else "fail", output=output, latency=500.0
    )
    result.scores = [
        ScoreRow("exact", first, float(first == "pass"), f"exact {first}"),
        ScoreRow("judge", second, float(second == "pass"), f"judge {second}"),
    ]
    return result


def sample_runs() -> tuple:  # type: ignore[type-arg]
    manifest = {"scorers": [{"type": "exact"}, {"type": "judge"}], "repeat": 1}
    base = run("base-run", [two_scorer_row(f"c{i}", "pass", "pass") for i in range(6)], manifest)
    cand_rows = [
        two_scorer_row("c0", "fail", "pass", output=EVIL),
        two_scorer_row("c1", "fail", "fail"),
        two_scorer_row("c2", "pass", "pass"),
        row("c3", "error", latency=None),
        two_scorer_row("c4", "pass", "pass"),
        two_scorer_row("c5", "pass", "pass"),
    ]
    cand = run("cand-run", cand_rows, manifest)
    comparison = compare_runs(base, cand, settings=FAST)
    decision = decide(comparison, cand.results, GatePolicy(max_error_rate=0.5, critical=["c1"]))
    return base, cand, comparison, decision


def test_junit_validates_against_the_common_schema_and_reads_back() -> None:
    etree = pytest.importorskip("lxml.etree")
    _, cand, _, decision = sample_runs()
    text = junit_xml(cand, decision)
    schema = etree.XMLSchema(etree.fromstring(JUNIT_XSD.encode()))
    document = etree.fromstring(text.encode())
    assert schema.validate(document), schema.error_log

    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    cases_suite, gate_suite = root.findall("testsuite")
    cases = cases_suite.findall("testcase")
    # One test case per eval case x scorer: 6 cases x 2 scorers (the errored case too).
    assert len(cases) == 12
    assert cases_suite.get("tests") == "12"
    failures = cases_suite.findall("testcase/failure")
    errors = cases_suite.findall("testcase/error")
    assert (len(failures), len(errors)) == (3, 2)
    assert (cases_suite.get("failures"), cases_suite.get("errors")) == ("3", "2")
    names = {c.get("name") for c in cases}
    assert {"c0 · exact", "c0 · judge", "c3 · exact"} <= names
    assert cases[0].get("classname") == "s.m"
    gate_cases = gate_suite.findall("testcase")
    assert len(gate_cases) == len(decision.checks)
    assert gate_suite.get("failures") == str(sum(c.status == "regression" for c in decision.checks))
    assert root.get("tests") == str(12 + len(gate_cases))
    # The invalid control character was dropped; the markup in the output is only text.
    failure_text = next(f.text for f in failures if f.text and "alert" in f.text)
    assert "\x01" not in failure_text and "<script>" in failure_text


def test_markdown_escapes_untrusted_outputs() -> None:
    cell = md_cell(EVIL)
    assert "<script>" not in cell and "<img" not in cell
    assert "|" not in cell.replace("\\|", "")
    assert "@octocat" not in cell and "](http" not in cell
    _, _, comparison, decision = sample_runs()
    text = gate_markdown(decision, comparison)
    assert text.startswith("## evals gate: ")
    assert "<script>" not in text and "<img" not in text
    for line in text.splitlines():
        if line.startswith("|"):  # every table row keeps its column count
            header_cells = len(re.findall(r"(?<!\\)\|", line))
            assert header_cells >= 3
    assert "regressed" in comparison_markdown(comparison)


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    base, cand, comparison, _ = sample_runs()
    page = html_report(cand, comparison, base=base)
    assert "Plotly" in page and len(page) > 1_000_000  # plotly.js inlined
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"?http", page)
    assert "alert(1)</script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert "Failing and errored cases" in page and "Cost vs quality" in page
    single = html_report(cand)
    assert "Against baseline" not in single


def test_report_and_compare_commands_write_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.runrefs import save_run_file

    monkeypatch.chdir(tmp_path)
    base, cand, _, _ = sample_runs()
    base.record["manifest"] = {**base.manifest, "dataset": {"source": "d", "version": "1"}}
    save_run_file(base.record, base.results, tmp_path / "base.jsonl")
    save_run_file(cand.record, cand.results, tmp_path / "cand.jsonl")
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "base.jsonl", "cand.jsonl", "--markdown", "c.md"])
    assert result.exit_code == 0, result.output
    assert "evals compare" in (tmp_path / "c.md").read_text()
    result = runner.invoke(app, ["report", "cand.jsonl", "--compare", "base.jsonl"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "cand-run.html").is_file()
    result = runner.invoke(
        app,
        [
            "gate",
            "--candidate",
            "cand.jsonl",
            "--baseline",
            "base.jsonl",
            "--junit",
            "j.xml",
            "--max-error-rate",
            "0.5",
            "--critical",
            "c1",
        ],
    )
    assert result.exit_code == 1, result.output
    assert ET.parse(tmp_path / "j.xml").getroot().tag == "testsuites"
