"""Minimal Django settings for the geonode sample: one view, no database."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A real deployment sets DJANGO_SECRET_KEY (e.g. via node.json worker options.env.vars).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "geonode-sample-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES = {}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {},
    }
]

USE_TZ = True
