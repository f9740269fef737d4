"""Settings, every one that differs between hosts read from the environment.

RINGMASTER_DJANGO_SECRET_KEY        required; the process refuses to start without it
RINGMASTER_DJANGO_ALLOWED_HOSTS     comma-separated host names (default: localhost, the name
                                    ``ringmaster-wsgi --check`` sends)
RINGMASTER_DJANGO_DB                the SQLite file (default /var/lib/ringmaster/django/db.sqlite3);
                                    the app's account must be able to write it and its directory
RINGMASTER_DJANGO_MEDIA_ROOT        where uploads are stored (default /var/lib/ringmaster/django/media)
RINGMASTER_DJANGO_STATIC_ROOT       where collectstatic gathers the static files (default:
                                    collected_static/ next to manage.py, i.e. in the release)
RINGMASTER_DJANGO_STATIC_URL        URL of the static files (default "static/": relative, so it
                                    follows the app's mount point, SCRIPT_NAME)
RINGMASTER_DJANGO_CSRF_TRUSTED_ORIGINS  comma-separated extra origins, e.g. https://a.example
RINGMASTER_DJANGO_SECURE_COOKIES    "1": the CSRF cookie is sent over HTTPS only

DEBUG is always off. The scheme (https or http) comes from the handler, which sets
wsgi.url_scheme from Mongrel2, so SECURE_PROXY_SSL_HEADER is not needed.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
_PREFIX = "RINGMASTER_DJANGO_"
_STATE = "/var/lib/ringmaster/django"


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(_PREFIX + name, "")
    if value:
        return value
    if default is None:
        raise ImproperlyConfigured(f"{_PREFIX}{name} must be set in the environment")
    return default


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in _env(name, default).split(",") if item.strip()]


SECRET_KEY = _env("SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS")
CSRF_COOKIE_SECURE = _env("SECURE_COOKIES", "0") == "1"

INSTALLED_APPS = ["django.contrib.staticfiles", "notes"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "sample_django.urls"
WSGI_APPLICATION = "sample_django.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# Several handler processes write one SQLite file: WAL lets readers go on while one writes,
# IMMEDIATE takes the write lock at the start of a transaction (no deadlock on upgrade), and a
# writer waits up to 20 s for the lock instead of failing with "database is locked".
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _env("DB", f"{_STATE}/db.sqlite3"),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = _env("STATIC_URL", "static/")
STATIC_ROOT = _env("STATIC_ROOT", str(BASE_DIR / "collected_static"))
MEDIA_URL = "media/"
MEDIA_ROOT = _env("MEDIA_ROOT", f"{_STATE}/media")
# Larger uploads go to a temporary file instead of memory (Django's default, said out loud).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"

# With DEBUG off Django sends errors to the admins by mail only; here they go to stderr,
# which circusd collects with the handler's own log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "WARNING"}},
}
