"""Run one DAG run of a DAG in the dags folder in this process, like `airflow dags test`, with a stable run id.

`airflow dags test DAG DATE` on Airflow 3 names each run after the moment it was started, so running it twice
gives two different task instances (and two different default run keys). A retry is a second try of the *same*
task instance; this runner pins the run id to the logical date, so running it again after a crash is exactly that.

Usage: python tools/dag_run.py DAG_ID YYYY-MM-DD   (AIRFLOW_HOME and the dags folder come from the environment)
"""

import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any


def load_dag(dag_id: str) -> Any:
    """The DAG object (Airflow 2's DAG or Airflow 3's SerializedDAG: what each ``dag.test`` needs)."""
    if TYPE_CHECKING:
        from airflow.dag_processing.dagbag import DagBag
    else:
        try:
            from airflow.dag_processing.dagbag import DagBag  # Airflow 3
        except ImportError:
            from airflow.models.dagbag import DagBag  # Airflow 2
    from airflow.configuration import conf

    folder = conf.get("core", "dags_folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as Airflow itself does, so DAG files can import their neighbours
    bag = DagBag(dag_folder=folder)
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(
            "no DAG %r in %s (import errors: %s)" % (dag_id, conf.get("core", "dags_folder"), bag.import_errors)
        )
    return dag


def main(dag_id: str, day: str) -> int:
    import airflow

    when = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    dag = load_dag(dag_id)
    if int(airflow.__version__.split(".")[0]) >= 3:
        run = dag.test(logical_date=when, run_after=when)
    else:
        run = dag.test(execution_date=when)
    state = str(getattr(run, "state", "")).split(".")[-1].lower()
    print("dag run %s of %s ended %s" % (getattr(run, "run_id", "?"), dag_id, state), flush=True)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
