"""The console's web side (Flask): login, the fleet page, its JSON feed, and actions with a
confirmation step.

Security: every page but the login needs a session; the session cookie is HttpOnly,
SameSite=Strict and Secure when the console is served over HTTPS; every POST carries a CSRF
token (Flask-WTF); failed logins are slowed down per client address (throttle.py); scripts
come from the console itself only (Content-Security-Policy), Chart.js from Debian's package.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from flask import (
    Flask,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from ringmaster_handler.curve import load_keypair

from ringmaster_console.actions import plan
from ringmaster_console.appmetrics import Rates
from ringmaster_console.config import ConsoleConfig, console_config, load_toml, pinned_counts
from ringmaster_console.fleet import FleetClient
from ringmaster_console.passwords import matches
from ringmaster_console.protocol import RequestError
from ringmaster_console.throttle import LoginThrottle

OPEN_ENDPOINTS = {"login", "static"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(config: ConsoleConfig, fleet: FleetClient | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME="ringmaster_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.https,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # The token lives as long as the session (the page stays open all day).
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=config.https,
        MAX_CONTENT_LENGTH=16 * 1024,
    )
    CSRFProtect(app)
    throttle = LoginThrottle(free=config.login_failures_free, max_delay=config.login_delay_max)
    if fleet is None:
        fleet = FleetClient(config.hosts, load_keypair(config.client_secret_key), config.timeout)
    app.extensions["ringmaster_fleet"] = fleet
    # The apps' counters as last seen, to rate the next poll's against (one page or several:
    # rates over whatever time passed between two polls of this console process).
    app_rates, rates_lock = Rates(time.monotonic), threading.Lock()
    pinned = pinned_counts(config.hosts)
    app.extensions["ringmaster_throttle"] = throttle

    @app.before_request
    def need_login():
        if request.endpoint in OPEN_ENDPOINTS or request.endpoint == "chart_js":
            return None
        if not session.get("user"):
            if request.path.startswith("/api/"):
                return jsonify({"error": "not logged in"}), 401
            return redirect(url_for("login"))
        return None

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Flask-WTF checks the Referer of HTTPS posts: same-origin ones must carry it.
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        if config.https:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(error):
        return render_template("error.html", message=f"Refused: {error.description}"), 400

    @app.route("/login", methods=["GET", "POST"])
    def login():
        message, status = None, 200
        if request.method == "POST":
            address = request.remote_addr or "unknown"
            wait = throttle.wait(address)
            if wait > 0:
                # Not even checked: guesses during the wait are worth nothing.
                message, status = f"Too many failed logins: try again in {wait:.0f} s.", 429
            elif matches(config.password_hash, request.form.get("password", "")):
                throttle.succeeded(address)
                session.clear()
                session.permanent = True
                session["user"] = True
                session["since"] = time.time()
                return redirect(url_for("overview"))
            else:
                delay = throttle.failed(address)
                message, status = "Wrong password.", 403
                if delay:
                    message += f" Wait {delay:.0f} s before the next try."
        return render_template("login.html", message=message), status

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    def overview():
        return render_template("overview.html", cap=config.max_processes)

    @app.get("/api/status")
    def api_status():
        hosts = fleet.status()
        with rates_lock:
            for host in hosts:
                for name, counters in (host.get("apps") or {}).items():
                    host["apps"][name] = (
                        counters
                        if "error" in counters
                        else app_rates.update(host["host"], name, counters)
                    )
        return jsonify({"time": time.time(), "hosts": hosts})

    @app.get("/static/chart.js")
    def chart_js():
        try:
            return send_file(config.chart_js, mimetype="text/javascript", max_age=3600)
        except OSError:
            abort(404)

    @app.post("/confirm")
    def confirm():
        try:
            action = plan(request.form, fleet.status(), config.max_processes, pinned)
        except RequestError as exc:
            return render_template("error.html", message=str(exc)), 400
        return render_template("confirm.html", action=action, form=request.form)

    @app.post("/act")
    def act():
        try:
            action = plan(request.form, fleet.status(), config.max_processes, pinned)
        except RequestError as exc:
            return render_template("error.html", message=str(exc)), 400
        app.logger.warning(
            "console action from %s: %s", request.remote_addr or "unknown", action.describe()
        )
        results = fleet.act(action.requests(), timeout=config.action_timeout)
        ok = all(r["up"] for r in results)
        return render_template("result.html", action=action, results=results, ok=ok), (
            200 if ok else 502
        )

    return app


def app_from_file(path: str) -> Flask:
    return create_app(console_config(load_toml(path, private=True), path))
