from django.urls import path
from notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health", views.health, name="health"),
    path("upload", views.upload, name="upload"),
    path("whoami", views.whoami, name="whoami"),
    path("migrations", views.migrations, name="migrations"),
]
