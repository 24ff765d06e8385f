"""geonode's ``static`` path service with werkzeug doing the file responses.

- ``send_file``: geonode's path resolution (safety checks, index files, listing,
  ``default_file``, trailing-slash redirects) is kept; the file response (conditional
  requests, ranges, ETag, Last-Modified, caching headers, streaming) is
  ``werkzeug.utils.send_file``. The content type is still geonode's guess (the
  ``mime_types`` option): it is passed as send_file's ``mimetype``.
- ``shareddata``: the whole service is ``werkzeug.middleware.shared_data.SharedDataMiddleware``
  over the folder (a 404 app behind it), ``cache_timeout`` passed through.
"""

from __future__ import annotations

from werkzeug.exceptions import HTTPException
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.utils import send_file


def _not_found(environ, start_response):
    body = b"404 Not Found: not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def make_file(static):
    def _file(self, environ, start_response, path, head):
        max_age = None if self.cache_timeout is None else int(self.cache_timeout)
        # send_file appends "; charset=utf-8" to text/* itself: give it the bare type.
        mimetype = self._content_type(path).removesuffix("; charset=utf-8")
        try:
            resp = send_file(path, environ, mimetype=mimetype, conditional=True, etag=True,
                             max_age=max_age)
        except OSError:
            return static._error(start_response, 404, "not found", head=head)
        except HTTPException as e:   # e.g. 416 for an unsatisfiable range
            return e(environ, start_response)
        return resp(environ, start_response)

    return _file


def make_build(static):
    def build(cfg, ctx):
        root = static._root(cfg, ctx)
        options = cfg.get("options") or {}
        timeout = options.get("cache_timeout", static.DEFAULT_CACHE_TIMEOUT)
        return SharedDataMiddleware(_not_found, {"/": str(root)},
                                    cache=timeout is not None, cache_timeout=int(timeout or 0))

    return build


def install(module, variant: str) -> None:
    if variant == "send_file":
        module.StaticApp._file = make_file(module)
    else:
        module.build = make_build(module)
