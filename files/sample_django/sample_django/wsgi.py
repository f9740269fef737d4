"""The WSGI callable: ``sample_django.wsgi:application`` (the directory above on the import path)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_django.settings")

application = get_wsgi_application()
