"""`emaki serve`: the HTTP server (A1111-compatible `/sdapi/v1`, native `/api`, web page).

The job queue and gallery live in SQLite under `EMAKI_HOME`; one worker thread runs jobs in
order through the same engine as the CLI.
"""

from emaki.server.app import ServerSettings, create_app, parse_credentials

__all__ = ["ServerSettings", "create_app", "parse_credentials"]
