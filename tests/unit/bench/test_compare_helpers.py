"""The pure helpers of bench/compare: workload graphs and their translations, timing arithmetic, report."""

from __future__ import annotations

import ast
import datetime as dt
import pathlib

import pytest
import yaml
from compare import document, report, stats, workloads

from kubeline.pipelines import loader


def test_the_three_workloads_have_the_issue_shapes() -> None:
    a, b, c = workloads.pick("a,b,c")
    assert (len(a.tasks), a.fib_n, a.tasks["t0"], a.tasks["t39"]) == (40, 10, [], ["t38"])
    assert (len(b.tasks), b.fib_n) == (10, 33)
    assert len(c.tasks) == 101 and c.tasks["n7"] == [] and len(c.tasks["join"]) == 100
    assert workloads.pick("all") == list(workloads.WORKLOADS.values())
    assert workloads.pick("fanout100") == [c]


@pytest.mark.parametrize("names", ["d", "", "a,zzz"])
def test_pick_refuses_unknown_workloads(names: str) -> None:
    with pytest.raises(SystemExit, match="workload"):
        workloads.pick(names)


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_airflow_dag_and_prefect_flows_are_valid_python(name: str) -> None:
    workload = workloads.WORKLOADS[name]
    dag = workloads.airflow_dag_source(workload)
    ast.parse(dag)
    assert f"dag_id={workload.dag_id!r}" in dag and "is_paused_upon_creation=False" in dag
    flows = workloads.prefect_flows_source([workload])
    ast.parse(flows)
    assert f"@flow(name={workload.dag_id!r})" in flows and "serve(" in flows


def test_generated_task_body_computes_the_workload() -> None:
    scope: dict[str, object] = {}
    exec(workloads.FIB_SOURCE, scope)
    assert eval(workloads.task_body(workloads.WORKLOADS["chain40_fib10"]), scope) == 55
    assert workloads.task_body(workloads.WORKLOADS["fanout100"]) == "pass"


@pytest.mark.parametrize("executor", ["local", "local-warm"])
def test_kubeline_pipeline_folder_loads_with_the_same_graph(tmp_path: pathlib.Path, executor: str) -> None:
    workload = workloads.WORKLOADS["fanout100"]
    folder = workloads.kubeline_pipeline(tmp_path, workload, executor=executor)
    pipeline = loader.load_folder(folder)
    assert pipeline.spec.executor == executor
    assert {s.id: list(s.depends_on) for s in pipeline.spec.stages} == workload.tasks
    assert yaml.safe_load((folder / "pipeline.yaml").read_text())["executor"] == executor


def test_parse_ts_reads_naive_as_utc_and_offsets() -> None:
    assert stats.parse_ts("2024-01-01 00:00:01.5") == 1704067201.5
    assert stats.parse_ts("2024-01-01T01:00:01.5+01:00") == 1704067201.5
    assert stats.parse_ts("2024-01-01T00:00:01.5Z") == 1704067201.5
    assert stats.parse_ts(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == 1704067200.0
    assert stats.parse_ts(None) is None and stats.parse_ts("") is None


def test_percentile_is_nearest_rank() -> None:
    assert stats.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 95) == 5.0
    assert stats.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert stats.percentile([7.0], 0) == 7.0
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1.0], 101)


def _t(task_id: str, queued: float, started: float, ended: float) -> stats.TaskTiming:
    return stats.TaskTiming(task_id=task_id, queued=queued, started=started, ended=ended)


def test_split_measures_assignment_execution_and_transition() -> None:
    graph = {"a": [], "b": [], "join": ["a", "b"]}
    tasks = {"a": _t("a", 0.0, 0.1, 1.1), "b": _t("b", 0.0, 0.3, 2.3), "join": _t("join", 2.5, 2.6, 2.7)}
    got = stats.split(tasks, graph)
    assert got["assignment"] == pytest.approx(0.1)
    assert got["execution"] == pytest.approx(1.0)
    assert got["transition"] == pytest.approx(0.2)  # from the LAST upstream's end


def test_split_names_missing_tasks() -> None:
    with pytest.raises(ValueError, match="no timestamps for tasks b"):
        stats.split({"a": _t("a", 0, 0, 0)}, {"a": [], "b": ["a"]})


def _measured(wall: float, state: str = "succeeded") -> dict[str, object]:
    return stats.RunTiming(queued=0.0, started=0.5, ended=0.5 + wall, observed=wall + 1, state=state,
                           split={"assignment": 0.01, "execution": wall / 10, "transition": 0.0}).as_dict()


def test_aggregate_takes_medians_and_p95_and_counts_failures() -> None:
    summary = stats.aggregate([_measured(w) for w in (1.0, 2.0, 3.0, 4.0)] + [_measured(10.0, "failed")])
    assert summary["wall"] == {"median": 3.0, "p95": 10.0, "min": 1.0, "max": 10.0}
    assert summary["end_to_end"]["median"] == 3.5
    assert summary["split"]["execution"] == pytest.approx(0.3)
    assert (summary["runs"], summary["failed"]) == (5, 1)
    with pytest.raises(ValueError, match="no measured runs"):
        stats.aggregate([])


def _results() -> list[dict[str, object]]:
    fast = {"engine": "kubeline-local", "label": "Kubeline (local)", "isolation": "process per task",
            "workload": "chain40_fib10", "summary": stats.aggregate([_measured(0.5)] * 5)}
    slow = {"engine": "airflow", "label": "Apache Airflow 3.3.2", "isolation": "process per task",
            "workload": "chain40_fib10", "summary": stats.aggregate([_measured(40.0)] * 5)}
    broken = {"engine": "prefect", "label": "Prefect 3.8.8", "isolation": "threads", "workload": "fanout100",
              "error": "TimeoutError: too slow"}
    return [slow, fast, broken]


def test_table_orders_by_median_and_shows_unmeasured_rows() -> None:
    text = report.table(_results(), workloads={"chain40_fib10": "(a)", "fanout100": "(c)"})
    lines = text.splitlines()
    assert lines[0].startswith("| workload | engine |") and len(lines) == 5
    assert "Kubeline (local)" in lines[2] and "**500 ms**" in lines[2]
    assert "Apache Airflow" in lines[3] and "**40.00 s**" in lines[3]
    assert "not measured: TimeoutError: too slow" in lines[4]
    assert all(line.count("|") == 10 for line in lines)


def test_small_and_negative_splits_render_readably() -> None:
    assert report.seconds(1.234) == "1.23 s" and report.seconds(0.0456) == "46 ms"
    assert report.millis(0.0123) == "12.3" and report.millis(0.25) == "250"
    assert report.millis(-0.001) == "~0"


def test_ratios_and_document() -> None:
    results = _results()
    assert report.ratios(results, baseline="kubeline-local") == {"chain40_fib10": {"airflow": 80.0,
                                                                                   "kubeline-local": 1.0}}
    data = {"machine": {"summary": "2 cores", "os": "Linux"}, "warmup": 1, "runs": 5, "wall_seconds": 600,
            "workloads": {"chain40_fib10": "(a)", "fanout100": "(c)"}, "results": results}
    text = document.render(data)
    assert text.startswith("## Performance") and "benchmarks.png" in text
    assert "- (a): Kubeline (local) 500 ms, Apache Airflow 3.3.2 40.00 s." in text
    assert "`fanout100` on Prefect 3.8.8: not measured: TimeoutError: too slow." in text


def test_a_page_merged_from_several_invocations_says_which_measured_what() -> None:
    rows = [{"engine": "airflow", "label": "Apache Airflow 3.3.2", "workload": "a", "stamp": "20261201T1937Z"},
            {"engine": "prefect", "label": "Prefect 3.8.8", "workload": "a", "stamp": "20261201T1952Z"},
            {"engine": "prefect", "label": "Prefect 3.8.8", "workload": "b", "stamp": "20261201T1952Z"}]
    note = document._invocations({"results": rows})
    assert "2 invocations" in note
    assert "Apache Airflow 3.3.2 at 20261201T1937Z; Prefect 3.8.8 at 20261201T1952Z" in note
    assert document._invocations({"results": rows[1:]}) == ""  # one invocation: nothing to say
