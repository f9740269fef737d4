"""A single-module Django project for the framework integration test."""

import hashlib

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ringmaster-tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    FILE_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024,
    DATA_UPLOAD_MAX_MEMORY_SIZE=None,
    LOGGING_CONFIG=None,
)

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


def index(request):
    return HttpResponse("Hello from Django")


@csrf_exempt
def echo(request):
    return JsonResponse(
        {
            "method": request.method,
            "post": request.POST.dict(),
            "get": request.GET.dict(),
            "path": request.path,
            "path_info": request.path_info,
            "host": request.get_host(),
        }
    )


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    h = hashlib.sha256()
    for block in f.chunks():
        h.update(block)
    return JsonResponse({"name": f.name, "size": f.size, "sha256": h.hexdigest()})


def stream(request):
    return StreamingHttpResponse((f"row {i}\n" for i in range(100)), content_type="text/plain")


def fail(request):
    raise RuntimeError("django view failed (expected by the test)")


urlpatterns = [
    path("", index),
    path("echo", echo),
    path("upload", upload),
    path("stream", stream),
    path("fail", fail),
]

application = get_wsgi_application()
