"""musicrec's library: every real step as plain, typed Python, callable from the CLI, tests and Airflow."""
