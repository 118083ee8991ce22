"""Print a URL for the PostgreSQL server on 127.0.0.1:5432 when one answers, else nothing.

`make test` uses it to run the Postgres tests a second time against a real server when the
machine has one (CI does); on a laptop without one it prints nothing and that pass is skipped.
"""

import psycopg2

URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

try:
    psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3).close()
except psycopg2.Error:
    pass
else:
    print(URL)
