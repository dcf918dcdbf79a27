"""The Airflow REST client's retry rules, against a tiny local HTTP server that answers like the API server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from portrait.services import AirflowAPI, AirflowAPIError

LOCKED = {"detail": "Database is locked. Backfill creation is not supported on SQLite under concurrent access."}


def _serve(answers):
    """A server whose POST /api/v2/backfills answers `answers` in turn; GET lists `listed` backfills."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.path == "/auth/token":
                return self._reply(201, {"access_token": "t"})
            seen.append((self.path, body, self.headers["Authorization"]))
            code, answer = answers.pop(0)
            self._reply(code, answer)

        def do_GET(self):
            seen.append((self.path, None, self.headers["Authorization"]))
            self._reply(200, {"backfills": [{"id": 1, "completed_at": "2026-11-01T00:00:00Z"},
                                            {"id": 2, "completed_at": None}]})

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def api_and_server(request):
    server, seen = _serve(list(request.param))
    yield AirflowAPI(f"http://127.0.0.1:{server.server_port}", "admin", "pw"), seen
    server.shutdown()


@pytest.mark.parametrize("api_and_server", [[(503, LOCKED), (503, LOCKED), (200, {"id": 7})]], indirect=True)
def test_backfill_tries_again_while_the_database_is_locked(api_and_server):
    api, seen = api_and_server
    assert api.backfill("profile_daily", "2026-11-10", "2026-11-12", {"retrain": "never"}, backoff_s=0.01) == {"id": 7}
    assert len(seen) == 3
    path, body, auth = seen[0]
    assert path == "/api/v2/backfills" and auth == "Bearer t"
    assert body == {"dag_id": "profile_daily", "from_date": "2026-11-10T00:00:00Z", "to_date": "2026-11-12T00:00:00Z",
                    "dag_run_conf": {"retrain": "never"}, "reprocess_behavior": "none", "max_active_runs": 1}


@pytest.mark.parametrize("api_and_server", [[(503, LOCKED), (409, {"detail": "already running"})]], indirect=True)
def test_a_conflict_after_a_locked_try_returns_the_backfill_that_got_created(api_and_server):
    api, seen = api_and_server
    assert api.backfill("profile_daily", "2026-11-10", "2026-11-12", backoff_s=0.01) == {"id": 2, "completed_at": None}
    assert seen[-1][0] == "/api/v2/backfills?dag_id=profile_daily"


@pytest.mark.parametrize("api_and_server", [[(409, {"detail": "already running"})],
                                            [(503, LOCKED)] * 3,
                                            [(400, {"detail": "bad dates"})]], indirect=True)
def test_other_answers_and_a_lock_that_never_clears_fail_with_the_servers_words(api_and_server):
    api, seen = api_and_server
    with pytest.raises(AirflowAPIError, match=r"POST /api/v2/backfills answered (409|503|400)") as err:
        api.backfill("profile_daily", "2026-11-10", "2026-11-12", attempts=3, backoff_s=0.01)
    assert err.value.status in (409, 503, 400)
    assert len(seen) == (3 if err.value.status == 503 else 1)
