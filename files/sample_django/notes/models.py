from django.db import models


class Note(models.Model):
    """A line of text, or the record of an uploaded file (stored under MEDIA_ROOT)."""

    text = models.CharField(max_length=500)
    created = models.DateTimeField(auto_now_add=True)
    attachment = models.FileField(upload_to="uploads/%Y/%m/%d/", blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ("-created", "-id")

    def __str__(self) -> str:
        return self.text
