"""The site's pages. Paths are relative to where the app is mounted (SCRIPT_NAME)."""

import hashlib
import os
import socket

from django import forms
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from notes.models import Note

HOSTNAME = socket.gethostname()


class NoteForm(forms.Form):
    text = forms.CharField(max_length=500)


class UploadForm(forms.Form):
    file = forms.FileField()


@require_http_methods(["GET", "HEAD", "POST"])
def index(request):
    """The notes, newest first, and a form to add one (POST, with the CSRF token)."""
    form = NoteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        Note.objects.create(text=form.cleaned_data["text"])
        return redirect("index")
    notes = Note.objects.all()[:50]
    status = 400 if request.method == "POST" else 200
    return render(request, "notes/index.html", {"notes": notes, "form": form}, status=status)


@require_GET
def health(request):
    """Plain "ok": touches neither the database nor the templates (usable before migrate)."""
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


@require_http_methods(["GET", "HEAD", "POST"])
def upload(request):
    """GET: the form. POST (multipart, field "file"): store it, answer JSON name/size/sha256."""
    if request.method != "POST":
        return render(request, "notes/upload.html", {"form": UploadForm()})
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    f = form.cleaned_data["file"]
    digest = hashlib.sha256()
    for chunk in f.chunks():
        digest.update(chunk)
    note = Note(text=f"uploaded {f.name}", size=f.size, sha256=digest.hexdigest())
    note.attachment.save(f.name, f, save=True)
    return JsonResponse(
        {
            "id": note.pk,
            "name": f.name,
            "stored": note.attachment.name,
            "size": note.size,
            "sha256": note.sha256,
        },
        status=201,
    )


@require_GET
def whoami(request):
    """Which app, host, scheme and process answered: for tests and for operators."""
    meta = request.META
    return JsonResponse(
        {
            "app": "sample_django",
            "host": request.get_host(),
            "script_name": meta.get("SCRIPT_NAME", ""),
            "path_info": request.path_info,
            "url_scheme": meta.get("wsgi.url_scheme"),
            "is_secure": request.is_secure(),
            "remote_addr": meta.get("REMOTE_ADDR"),
            "hostname": HOSTNAME,
            "pid": os.getpid(),
        }
    )


@require_GET
def migrations(request):
    """The rows of django_migrations: each migration and when it was applied (once per database)."""
    rows = MigrationRecorder.Migration.objects.order_by("id")
    return JsonResponse({"applied": [{"app": r.app, "name": r.name, "applied": r.applied.isoformat()} for r in rows]})
