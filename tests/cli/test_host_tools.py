"""The host tools (`ls`, `doctor`, `metrics`) as a set: the help lists them, and every query they send is served by an
index (each tool's behaviour is tested in its own module: test_logs_follow.py, test_ls.py, test_doctor.py,
test_metrics.py)."""

import sqlite3
import time


def test_help_lists_the_host_tools(run):
    out = run("--help").out
    for name in ("ls", "doctor", "metrics"):
        assert "\n  %s " % name in out
    assert "--recent-hours HOURS" in run("metrics", "--help").out
    assert "--fix" in run("doctor", "--help").out and "--last N" in run("ls", "--help").out


def test_the_queries_of_ls_doctor_and_metrics_are_served_by_indexes(monkeypatch, tmp_path):
    """Run the tools in-process over a seeded history, record every statement they send to SQLite, and ask SQLite
    for each one's plan: no statement may read the jobs table row by row (a SCAN without an index) or sort it."""
    from orchesjob import doctor as doctor_mod
    from orchesjob import jobs, metrics, store, table

    monkeypatch.setenv("ORCHESJOB_HOME", str(tmp_path / "h"))
    st = store.open_store(create=True)
    assert st is not None
    t = int(time.time())
    with st.write():
        for i in range(300):
            key = "k%d" % (i % 30)
            jid = "%08x-0000-4000-8000-%012x" % (i, i)
            st.insert(
                {
                    "job_id": jid,
                    "run_key": key,
                    "attempt_no": st.next_attempt(key),
                    "status": ("SUCCEEDED", "FAILED", "LOST", "ABORTED")[i % 4],
                    "command": ["true"],
                    "env": {},
                    "strict": False,
                    "exit_code": 0,
                    "stdout_file": str(tmp_path / (jid + ".stdout")),
                    "stderr_file": str(tmp_path / (jid + ".stderr")),
                    "started_at": t - 1000 + i,
                    "finished_at": t - 900 + i,
                    "updated_at": t,
                }
            )
    seen: list[str] = []
    real = store._Connection.execute

    def traced(self, *args):
        seen.append(args[0])
        return real(self, *args)

    monkeypatch.setattr(store._Connection, "execute", traced)
    table.select(st, 20, None)
    table.select(st, None, "k3")
    table.select(st, None, None)
    metrics.collect(st, st.path, 3600, 5)  # 5 of 30 families: the rest of the window is read to count them
    doctor_mod.Doctor(fix=False).run()
    jobs.lookup(st, "k1", None)
    monkeypatch.setattr(store._Connection, "execute", real)
    queries = sorted({q for q in seen if q.lstrip().upper().startswith("SELECT") and "FROM jobs" in q})
    assert len(queries) >= 10, queries
    conn = sqlite3.connect(st.path)
    for q in queries:
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, (None,) * q.count("?"))]
        for step in plan:
            assert not (step.startswith("SCAN jobs") and "INDEX" not in step), (q, plan)
        if "ORDER BY started_at DESC" in q or "ORDER BY finished_at DESC" in q:  # read in index order, never sorted
            assert not any("TEMP B-TREE" in step for step in plan), (q, plan)
    wanted = {
        "SELECT * FROM jobs ORDER BY started_at DESC, rowid DESC LIMIT ?": "jobs_started_at",
        "SELECT count(*) FROM jobs WHERE status = ?": "jobs_status_finished_at",
        "SELECT count(*) FROM jobs WHERE status = ? AND finished_at >= ?": "jobs_status_finished_at",
    }
    for q, index in wanted.items():
        assert q in queries
        assert any(index in r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, (None,) * q.count("?"))), q
    conn.close()
