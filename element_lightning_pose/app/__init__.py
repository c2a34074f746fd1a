"""The browser app (``elp app``): label, train, review and relabel in one place.

An optional extra (``pip install "element-lightning-pose[app]"``): FastAPI and uvicorn serve
server-rendered pages whose own small scripts (``static/``, no framework, no build step, no CDN)
call the API. The app imports the engine; the engine never imports the app.

- :mod:`.settings` - the roots, the address and the token (:class:`AppSettings`);
- :mod:`.security` - the guard every request passes: token, host, state changes, sizes, headers;
- :mod:`.locations` - ``<root>:<path>`` keys, the one way a request names a file;
- :mod:`.projects` - projects under the roots: found, described, created;
- :mod:`.frames` - video frames decoded on the server, frame-exact, cached;
- :mod:`.review` - what the review keeps between requests: parsed prediction files, prediction
  jobs;
- :mod:`.pipeline` - with a database, a round registered for a worker to train;
- :mod:`.pipeline_rows` - with a database, the pipeline's rows about a project and their files;
- :mod:`.jobs` - training jobs: ``elp train`` in a process of its own, followed and cancelled;
- :mod:`.server` - :func:`create_app`, errors as messages;
- :mod:`.routes` - the pages and the API, one module per concern.
"""
