from orchesjob_provider.extra import require

require()  # a clear error naming `orchesjob[airflow]` instead of "No module named 'paramiko'" further in
