"""Static files served by edgeproxy itself: a location with `root` or `alias`.

- paths.py: the request target -> a path relative to the location's directory, refusing
  anything that could name a file outside it (or a dotfile);
- opener.py: opening that path beneath the directory without a check-then-open race;
- types.py: Content-Type from the extension;
- validators.py: ETag / Last-Modified, conditional requests, Range;
- cache.py: the bounded open-file cache;
- handler.py: the Handler and the Responder that sends a file with sendfile.
"""
